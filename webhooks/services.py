import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from kombu.exceptions import ChannelError

from audit.models import AuditAction
from audit.services import audit_entries_deferred, audit_entry_append
from canonical.envelope import canonical_events_build
from config import encryption
from config.db import row_insert_new_if_current
from config.exceptions import ApplicationError
from fulfillment.services import canonical_event_fulfil
from providers import SCHEMES, SigningKey, VerifiedDelivery, scheme_get
from webhooks import metrics
from webhooks.deadletters import dead_letter_record
from webhooks.exceptions import (
    EndpointNotFound,
    IdempotencyConflict,
    InvalidPayload,
    InvalidSecret,
    InvalidSignature,
    SignatureError,
    UnknownEndpoint,
    WebhookError,
)
from webhooks.models import EndpointSecret, WebhookEndpoint, WebhookEvent
from webhooks.publishing import webhook_events_publish
from webhooks.throttling import sources_cache_clear, sources_parse

logger = logging.getLogger(__name__)


# --- Endpoints and secrets ----------------------------------------------------------------------


def secret_fingerprint(secret: str) -> str:
    """The display name of a secret in lists and the audit log (keyed, so it confirms no guess).

    Stored when the secret is added and never recomputed: nothing looks a secret up by it, so a
    BLIND_INDEX_KEY rotation changes only the names of secrets added afterwards.
    """
    return hmac.new(settings.BLIND_INDEX_KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()[:16]


def _secret_hint(secret: str) -> str:
    prefix, sep, _ = secret.partition("_")
    return f"{prefix}_" if sep else ""


_DURATION = re.compile(r"^(\d{1,6})([smhd]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def secret_expiry_parse(text: str) -> timedelta:
    """`24h`, `30m`, `7d`, `90s`, `0` (now) → a timedelta; raises InvalidSecret with the accepted forms."""
    match = _DURATION.match(text.strip())
    if not match or (match.group(2) == "" and match.group(1) != "0"):
        raise InvalidSecret("a duration is a number with a unit: 90s, 30m, 24h, 7d, or 0 for now")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > 365 * 86400:
        raise InvalidSecret("a duration is at most 365 days")
    return timedelta(seconds=seconds)


def _endpoint_lock(endpoint_id: int) -> WebhookEndpoint:
    """Lock the endpoint row: secret changes of one endpoint are serialised (the duplicate check
    compares decrypted values, which no unique constraint can do)."""
    return WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)


@sensitive_variables()  # every local: keys, secrets, the body
def _secret_matching(endpoint: WebhookEndpoint, secret: str) -> EndpointSecret | None:
    """The endpoint's row holding `secret`, found by decrypting each (an endpoint has a handful) and
    comparing in constant time: independent of any fingerprint key, so no rotation can make it miss."""
    wanted = secret.encode()
    found = None
    for row in EndpointSecret.objects.filter(endpoint=endpoint).order_by("created_at", "id"):
        if hmac.compare_digest(encryption.decrypt(row.value_encrypted), wanted) and found is None:
            found = row
    return found


def _secrets_changed(endpoint: WebhookEndpoint) -> None:
    """Every web process sees the new version on its next stored event (or failed verification)
    and reloads; this process forgets its copy at commit."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secrets_version=F("secrets_version") + 1)
    transaction.on_commit(endpoint_cache_clear)


def _secret_audit(action: str, *, endpoint: WebhookEndpoint, row: EndpointSecret, actor: str, source: str, **data) -> None:
    audit_entry_append(
        action=action,
        actor=actor,
        data={
            "endpoint_id": endpoint.pk, "slug": endpoint.slug, "key_fingerprint": row.fingerprint, "kind": row.kind,
            "source": source, **data,
        },
    )


@transaction.atomic
def webhook_endpoint_create(
    *, slug: str, scheme: str, secret: str, description: str = "", mode: str = "live",
    allowed_sources: list[str] | tuple[str, ...] = (), actor: str = "system", source: str = "command"
) -> WebhookEndpoint:
    if scheme not in SCHEMES:
        raise InvalidSecret(f"unknown scheme {scheme!r}; known: {', '.join(sorted(SCHEMES))}")
    if mode not in ("live", "test"):
        raise WebhookError(f"unknown mode {mode!r}; known: live, test")
    sources = sources_parse(allowed_sources)
    endpoint, created = WebhookEndpoint.objects.get_or_create(
        slug=slug, defaults={"scheme": scheme, "description": description, "mode": mode, "allowed_sources": sources}
    )
    if not created:
        raise WebhookError(f"endpoint {slug!r} already exists")
    transaction.on_commit(sources_cache_clear)  # this process may remember the slug as unknown
    endpoint_secret_add(endpoint=endpoint, secret=secret, actor=actor, source=source)
    return endpoint


_UNCHANGED = object()


@transaction.atomic
def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, actor: str, source: str, note: str = "", slug=_UNCHANGED, scheme=_UNCHANGED,
    description=_UNCHANGED, is_active=_UNCHANGED, mode=_UNCHANGED, allowed_sources=_UNCHANGED,
) -> list[str]:
    """Change an endpoint's settings (secrets have their own services); returns the fields changed.

    A change of what the endpoint accepts (slug, scheme, is_active, mode, allowed_sources) is
    audited as `endpoint.changed`; a description alone is not. Source networks are counted, not
    listed: addresses never go into the audit log.
    """
    if scheme is not _UNCHANGED and scheme not in SCHEMES:
        raise InvalidSecret(f"unknown scheme {scheme!r}; known: {', '.join(sorted(SCHEMES))}")
    if mode is not _UNCHANGED and mode not in ("live", "test"):
        raise WebhookError(f"unknown mode {mode!r}; known: live, test")
    if allowed_sources is not _UNCHANGED:
        allowed_sources = sources_parse(allowed_sources or [])
    row = _endpoint_lock(endpoint.pk)
    wanted = {
        "slug": slug, "scheme": scheme, "description": description, "is_active": is_active, "mode": mode,
        "allowed_sources": allowed_sources,
    }
    changes = {}
    for name, value in wanted.items():
        if value is not _UNCHANGED and getattr(row, name) != value:
            changes[name] = (getattr(row, name), value)
            setattr(row, name, value)
    if not changes:
        return []
    # update_fields: never write secrets_version from this copy (see WebhookEndpointAdmin.save_model).
    row.save(update_fields=list(changes))
    for name, (_, value) in changes.items():
        setattr(endpoint, name, value)
    transaction.on_commit(sources_cache_clear)
    transaction.on_commit(endpoint_cache_clear)
    audited = {name: pair for name, pair in changes.items() if name != "description"}
    if audited:
        data = {"endpoint_id": row.pk, "fields": sorted(audited), "source": source, "note": note.strip() or None}
        for name, (before, after) in audited.items():
            if name == "allowed_sources":
                data["allowed_sources_count"] = {"before": len(before), "after": len(after)}
            else:
                data[name] = {"before": before, "after": after}
        data.setdefault("slug", {"before": row.slug, "after": row.slug})
        audit_entry_append(action=AuditAction.ENDPOINT_CHANGED, actor=actor, data=data)
    return list(changes)


@transaction.atomic
def endpoint_secret_add(
    *,
    endpoint: WebhookEndpoint,
    secret: str,
    expire_others_in: timedelta | None = None,
    actor: str = "system",
    source: str = "command",
) -> EndpointSecret:
    """Add a secret that verifies from the next request on, in every web process.

    With `expire_others_in` (a "roll"), the endpoint's other secrets stop verifying that long from
    now (a secret already due sooner keeps its earlier time). Audited as `endpoint.secret_added`,
    with the fingerprints of the secrets set to expire.
    """
    key = scheme_get(endpoint.scheme).secret_parse(secret)
    endpoint = _endpoint_lock(endpoint.pk)
    if _secret_matching(endpoint, secret) is not None:
        raise InvalidSecret("this secret is already on the endpoint")
    row = EndpointSecret.objects.create(
        endpoint=endpoint,
        kind=key.kind,
        value_encrypted=encryption.encrypt(secret.encode()),
        fingerprint=secret_fingerprint(secret),
        hint=_secret_hint(secret),
    )
    data = {}
    if expire_others_in is not None:
        expires_at = timezone.now() + expire_others_in
        others = EndpointSecret.objects.filter(endpoint=endpoint).exclude(pk=row.pk)
        expiring = list(
            others.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=expires_at)).values_list("fingerprint", flat=True)
        )
        others.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=expires_at)).update(expires_at=expires_at)
        data = {"others_expire_at": expires_at.isoformat(), "expiring_key_fingerprints": sorted(expiring)}
    _secrets_changed(endpoint)
    _secret_audit(AuditAction.ENDPOINT_SECRET_ADDED, endpoint=endpoint, row=row, actor=actor, source=source, **data)
    return row


def _secret_delete(endpoint: WebhookEndpoint, row: EndpointSecret, *, actor: str, source: str) -> None:
    row.delete()
    _secrets_changed(endpoint)
    _secret_audit(AuditAction.ENDPOINT_SECRET_REMOVED, endpoint=endpoint, row=row, actor=actor, source=source)


@transaction.atomic
def endpoint_secret_remove(
    *, endpoint: WebhookEndpoint, secret: str, actor: str = "system", source: str = "command"
) -> EndpointSecret:
    """Remove the secret (found by value, not by fingerprint); it refuses from the next request on."""
    endpoint = _endpoint_lock(endpoint.pk)
    row = _secret_matching(endpoint, secret)
    if row is None:
        raise InvalidSecret("no such secret on this endpoint")
    _secret_delete(endpoint, row, actor=actor, source=source)
    return row


@transaction.atomic
def endpoint_secret_delete(*, secret_id: int, actor: str, source: str = "admin") -> EndpointSecret:
    """Remove a secret picked by its row (the admin, which never sees the value)."""
    row = EndpointSecret.objects.filter(pk=secret_id).first()
    if row is None:
        raise InvalidSecret("no such secret")
    endpoint = _endpoint_lock(row.endpoint_id)
    _secret_delete(endpoint, row, actor=actor, source=source)
    return row


def webhook_endpoint_get(*, slug: str) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.get(slug=slug)
    except WebhookEndpoint.DoesNotExist:
        raise EndpointNotFound(f"no endpoint {slug!r}") from None


@sensitive_variables()  # every local: keys, secrets, the body
def endpoint_secrets_decrypted(*, endpoint: WebhookEndpoint) -> list[str]:
    return [encryption.decrypt(row.value_encrypted).decode() for row in endpoint.secrets.all()]


# --- Receiving ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EndpointKeys:
    """An endpoint's parsed keys as of `version`, each with its expiry (epoch seconds or None)."""

    id: int
    slug: str
    scheme: str
    version: int
    keys: tuple[tuple[SigningKey, float | None], ...]

    def keys_active(self, now: float) -> tuple[SigningKey, ...]:
        return tuple(key for key, expires in self.keys if expires is None or now < expires)


# Per process, no lifetime: an entry is used until the database says its version is stale.
_endpoint_cache: dict[str, _EndpointKeys] = {}


def endpoint_cache_clear() -> None:
    _endpoint_cache.clear()


@sensitive_variables()  # every local: keys, secrets, the body
def _endpoint_keys_load(slug: str) -> _EndpointKeys:
    endpoint = WebhookEndpoint.objects.filter(slug=slug, is_active=True).prefetch_related("secrets").first()
    if endpoint is None:
        _endpoint_cache.pop(slug, None)
        raise UnknownEndpoint("no active endpoint with this slug")
    scheme = scheme_get(endpoint.scheme)
    keys = tuple(
        (scheme.secret_parse(encryption.decrypt(row.value_encrypted).decode()), row.expires_at.timestamp() if row.expires_at else None)
        for row in endpoint.secrets.all()
    )
    entry = _EndpointKeys(endpoint.id, endpoint.slug, endpoint.scheme, endpoint.secrets_version, keys)
    _endpoint_cache[slug] = entry
    return entry


@sensitive_variables()  # every local: keys, secrets, the body
def _endpoint_keys_get(slug: str) -> tuple[_EndpointKeys, bool]:
    """The endpoint's keys from this process's cache (loaded on first use); and whether they came
    from the cache, i.e. may be stale."""
    cached = _endpoint_cache.get(slug)
    if cached is not None:
        return cached, True
    return _endpoint_keys_load(slug), False


@sensitive_variables()  # every local: keys, secrets, the body
def _endpoint_keys_current(entry: _EndpointKeys) -> _EndpointKeys | None:
    """After cached keys failed to verify: a fresh copy if the endpoint changed since, else None.
    One indexed read when nothing changed, so a refusal stays cheap."""
    current = WebhookEndpoint.objects.filter(pk=entry.id, is_active=True).values_list("secrets_version", flat=True).first()
    if current == entry.version:
        return None
    return _endpoint_keys_load(entry.slug)


@sensitive_variables()  # every local: keys, secrets, the body
def _verify(entry: _EndpointKeys, *, body: bytes, headers) -> list[VerifiedDelivery]:
    now = time.time()
    return scheme_get(entry.scheme).verify_all(
        headers=headers, body=body, keys=entry.keys_active(now), tolerance=settings.WEBHOOK_TOLERANCE_SECONDS, now=now
    )


@sensitive_variables()  # every local: keys, secrets, the body
def _verify_current(entry: _EndpointKeys, cached: bool, *, body: bytes, headers) -> tuple[_EndpointKeys, list[VerifiedDelivery]]:
    """Verify with `entry`; if cached keys find no matching signature, re-check once against the
    database (a secret added in another process verifies on its very next request)."""
    try:
        return entry, _verify(entry, body=body, headers=headers)
    except InvalidSignature:
        if not cached:
            raise
        fresh = _endpoint_keys_current(entry)
        if fresh is None:
            raise
    return fresh, _verify(fresh, body=body, headers=headers)


@dataclass(frozen=True)
class ReceiveResult:
    event_id: str  # the stored event (the first one, when a request delivers several)
    created: bool  # stored now, not a redelivery (any of them, when several)
    answer: bytes | None = None  # the provider's expected 2xx body, when it has its own


@sensitive_variables()  # every local: keys, secrets, the body
def webhook_event_receive(*, slug: str, body: bytes, headers) -> ReceiveResult:
    """Verify a delivery over its raw bytes and store each event it carries once, under
    `<slug>:<provider event id>` (one per request for every scheme but Adyen's item lists).

    Raises a WebhookError for every refusal; nothing is stored unless the signature verifies.

    Keys come from a per-process cache with the endpoint's `secrets_version`; the INSERT happens
    only if that version is still current (same statement), so a secret removed or expired by a
    roll in another process refuses from its next request on, at no extra round trip. A stale
    version reloads the keys and verifies again (at most twice: each reload reads committed state);
    events a stale pass already stored come back as duplicates of themselves.
    """
    entry, cached = _endpoint_keys_get(slug)
    for _ in range(3):
        try:
            entry, deliveries = _verify_current(entry, cached, body=body, headers=headers)
        except SignatureError as exc:
            metrics.signature_failures.labels(endpoint=entry.slug, reason=exc.code).inc()
            logger.warning("webhook refused: endpoint=%s reason=%s", entry.slug, exc.code)
            raise
        if not deliveries:
            raise InvalidPayload("the body carries no event")
        scheme = scheme_get(entry.scheme)
        stored = []
        for delivery in deliveries:
            event, inserted, current = _event_insert(entry, scheme, delivery, body)
            if current != entry.version:
                break
            stored.append((event, inserted))
        else:
            break
        # Stale keys (or the endpoint was deactivated or replaced): verify again with what is current.
        entry, cached = _endpoint_keys_load(slug), False
    else:
        # Two more secret changes landed during this request: answer 503 (retry), store nothing new.
        raise OperationalError("the endpoint's secrets changed while the request was verified")
    results = [_stored_or_duplicate(entry, event, inserted) for event, inserted in stored]
    return ReceiveResult(event_id=results[0][0], created=any(created for _, created in results), answer=scheme.accepted_answer)


@sensitive_variables("body")
def _event_insert(entry: _EndpointKeys, scheme, delivery: VerifiedDelivery, body: bytes):
    event = WebhookEvent(
        endpoint_id=entry.id,
        idempotency_key=f"{entry.slug}:{delivery.provider_event_id}",
        provider_event_id=delivery.provider_event_id,
        event_type=delivery.event_type,
        content_hash=scheme.content_hash(delivery.payload),
        body_encrypted=encryption.encrypt(body),
        headers_encrypted=encryption.encrypt(_headers_serialize(delivery.used_headers)),
        received_at=timezone.now(),
        provider_created_at=delivery.provider_created_at,
    )
    inserted, current = row_insert_new_if_current(
        event, conflict_fields=("idempotency_key",), owner=WebhookEndpoint, owner_id=entry.id,
        version_field="secrets_version", version=entry.version, live_field="is_active",
    )
    return event, inserted, current


def _stored_or_duplicate(entry: _EndpointKeys, event: WebhookEvent, inserted) -> tuple[str, bool]:
    """(event id, created): a new row, or the stored one when its content matches; a 409 otherwise."""
    if inserted is not None:
        metrics.events_received.labels(endpoint=entry.slug, outcome="accepted").inc()
        return str(event.id), True
    existing_id, existing_hash = WebhookEvent.objects.filter(idempotency_key=event.idempotency_key).values_list(
        "id", "content_hash"
    ).get()
    if existing_hash != event.content_hash:
        metrics.events_received.labels(endpoint=entry.slug, outcome="conflict").inc()
        logger.warning("idempotency conflict: endpoint=%s event=%s", entry.slug, existing_id)
        raise IdempotencyConflict(
            "this idempotency key was stored with different content", extra={"event_id": str(existing_id)}
        )
    metrics.events_received.labels(endpoint=entry.slug, outcome="duplicate").inc()
    return str(existing_id), False


def _headers_serialize(headers: dict[str, str]) -> bytes:
    return json.dumps(headers, separators=(",", ":")).encode()


def webhook_event_body(*, event: WebhookEvent) -> bytes:
    return encryption.decrypt(event.body_encrypted)


def webhook_event_headers(*, event: WebhookEvent) -> dict[str, str]:
    return json.loads(encryption.decrypt(event.headers_encrypted))


# --- Handing events to Celery ---------------------------------------------------------------------


def _queue_empty() -> bool:
    """True when the broker's queue holds no message (False when the broker cannot say)."""
    try:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)  # never the default: retry forever
            try:
                return conn.default_channel.queue_declare(queue=settings.CELERY_TASK_DEFAULT_QUEUE, passive=True).message_count == 0
            except ChannelError:  # Redis keeps no empty list: a queue never filled, or drained
                return True
    except Exception as exc:  # the broker is away: only the lost-message backstop applies
        logger.warning("sweep could not read the queue length (%s)", type(exc).__name__)
        return False


def webhook_events_dispatch(*, limit: int = 1000) -> int:
    """The sweep, a safety net behind the outbox relay: republish what is stuck. Returns how many.

    Picks, oldest first:
    - `received` events no relay published within WEBHOOK_REDISPATCH_AFTER_SECONDS;
    - events whose worker lease lapsed (the holder died: its message stays unacknowledged in the
      broker until the visibility timeout, an hour); the lease is cleared so each lapse is
      republished once, and the event can be claimed at once;
    - when the queue is empty, unleased events whose message was due more than
      WEBHOOK_REDISPATCH_AFTER_SECONDS ago: nothing waits in the queue, so the message was taken by a
      worker that died before leasing it (a crash between delivery and lease, or a retry's delayed
      message held by the dead worker), or the broker lost it;
    - whatever the queue holds, unleased events whose message must be lost (due more than
      WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS ago): the backstop while a backlog never drains.
    Rows a worker is processing right now are row-locked and skipped. A message sent twice is
    harmless: processing claims each event once and skips finished ones.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_AFTER_SECONDS)
    lost = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS)
    Status = WebhookEvent.Status
    waiting = Q(status__in=_LEASABLE)
    unpublished = Q(status=Status.RECEIVED, dispatched_at__isnull=True, received_at__lt=grace)
    lease_lapsed = waiting & Q(lease_expires_at__lt=now)
    unleased = waiting & Q(lease_expires_at__isnull=True)
    message_lost = unleased & Q(received_at__lt=lost) & (Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=lost))
    stuck = unpublished | lease_lapsed | message_lost
    if _queue_empty():
        stuck |= unleased & Q(dispatched_at__lt=grace)
    with transaction.atomic():
        rows = list(
            WebhookEvent.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(stuck)
            .order_by("received_at")
            .values_list("id", "lease_expires_at")[:limit]
        )
        if not rows:
            return 0
        event_ids = [event_id for event_id, _ in rows]
        # Published inside the transaction: if the broker is away, the rows stay unmarked.
        webhook_events_publish(event_ids=event_ids)
        WebhookEvent.objects.filter(id__in=event_ids).update(dispatched_at=now, lease_holder="", lease_expires_at=None)
    lapsed = sum(1 for _, expires in rows if expires is not None and expires < now)
    if lapsed:
        logger.warning("sweep republished %d events whose worker lease lapsed", lapsed)
    logger.info("sweep dispatched %d stored events", len(event_ids))
    return len(event_ids)


# --- Processing -------------------------------------------------------------------------------------


class PoisonEvent(Exception):
    """An event whose processing keeps dying (the worker is killed) before it can fail cleanly."""


# --- Leases: which live worker holds an event ------------------------------------------------------
#
# A worker leases the events of a message before it starts on them (holder `host:pid:token`, expiry
# now + WEBHOOK_LEASE_SECONDS) and renews the lease while it works through them. If it dies, the
# lease lapses and the sweep republishes the events within WEBHOOK_LEASE_SECONDS plus one sweep
# interval, instead of waiting for the broker's visibility timeout. The lease says who should work
# on an event; what stops two workers running one event at once is the row lock the processing
# transaction takes (SELECT … FOR UPDATE SKIP LOCKED) and its status check, so a lease that lapses
# under a live but slow worker costs a spare message, never a second run. Times are the workers'
# clocks (NTP keeps them within milliseconds; a lease lasts tens of seconds).

_LEASABLE = (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING, WebhookEvent.Status.FAILED)
_holder: dict[str, object] = {"pid": None, "name": ""}


def lease_holder_name() -> str:
    """This process's name on leases: `host:pid:token`. The random token tells a process from an
    earlier one that had the same pid; it is made again after a fork."""
    pid = os.getpid()
    if _holder["pid"] != pid:
        _holder.update(pid=pid, name=f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}")
    return _holder["name"]


def _lease_expiry(now):
    return now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)


def _holder_process_gone(holder: str) -> bool:
    """True when `holder` names a process on this host that no longer exists (killed, OOM, crashed)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or holder == lease_holder_name():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a live process of another user: the pid was reused, the holder may be elsewhere
    try:  # a killed child its parent has not reaped yet is a zombie: gone too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def webhook_events_lease(*, event_ids: list[str]) -> set[str]:
    """Take or renew this process's lease on those of `event_ids` still waiting to be processed.

    Returns the ids this process now holds. An event is left out when it is finished, locked by a
    worker processing it, or leased by another live process. A lease held by a process of this host
    that has died (a pool process SIGKILLed, its message redelivered to its replacement) is taken
    over at once rather than after it lapses.
    """
    if not event_ids:
        return set()
    holder, now = lease_holder_name(), timezone.now()
    meta, quote, ops = WebhookEvent._meta, connection.ops.quote_name, connection.ops
    table = quote(meta.db_table)
    pks = [meta.pk.get_db_prep_value(meta.pk.to_python(event_id), connection) for event_id in event_ids]
    # SKIP LOCKED: a row being processed right now is not waited for (its holder is alive).
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    with connection.cursor() as cursor:  # one autocommitted statement
        cursor.execute(
            f"UPDATE {table} SET lease_holder = %s, lease_expires_at = %s WHERE id IN ("
            f"SELECT id FROM {table} WHERE id IN ({', '.join(['%s'] * len(pks))}) AND status IN (%s, %s, %s) "
            f"AND (lease_holder = %s OR lease_expires_at IS NULL OR lease_expires_at < %s){skip_locked}) RETURNING id",
            [holder, ops.adapt_datetimefield_value(_lease_expiry(now)), *pks, *_LEASABLE, holder,
             ops.adapt_datetimefield_value(now)],
        )
        held = {str(meta.pk.to_python(row[0])) for row in cursor.fetchall()}
    others = [event_id for event_id in map(str, event_ids) if event_id not in held]
    if others:
        held |= _leases_of_dead_holders_take(others, holder)
    return held


def _leases_of_dead_holders_take(event_ids: list[str], holder: str) -> set[str]:
    taken = set()
    host = socket.gethostname()
    leased = WebhookEvent.objects.filter(
        id__in=event_ids, status__in=_LEASABLE, lease_holder__startswith=f"{host}:"
    ).values_list("id", "lease_holder")
    for event_id, other in leased:
        if not _holder_process_gone(other):
            continue
        # Conditional on the dead holder: of two processes taking over, one wins.
        if WebhookEvent.objects.filter(id=event_id, lease_holder=other, status__in=_LEASABLE).update(
            lease_holder=holder, lease_expires_at=_lease_expiry(timezone.now())
        ):
            logger.warning("lease taken over from a dead process: event=%s holder=%s", event_id, other)
            taken.add(str(event_id))
    return taken


def _attempt_claim(event_id: str) -> int | None:
    """Count an attempt in its own committed transaction, before any work, and (re)take the lease.

    Brokers do not count redeliveries, so a poison event that kills its worker every time would loop
    forever; this counter survives the crash. Returns the attempt number, or None when the event is
    not waiting for processing (already done, ignored or dead) or another live process holds it.
    """
    holder, now = lease_holder_name(), timezone.now()
    meta, quote, ops = WebhookEvent._meta, connection.ops.quote_name, connection.ops
    pk = meta.pk.get_db_prep_value(meta.pk.to_python(event_id), connection)
    with connection.cursor() as cursor:  # one autocommitted statement
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET attempts = attempts + 1, status = %s, lease_holder = %s, "
            f"lease_expires_at = %s WHERE id = %s AND status IN (%s, %s, %s) "
            f"AND (lease_holder = %s OR lease_expires_at IS NULL OR lease_expires_at < %s) RETURNING attempts",
            [WebhookEvent.Status.PROCESSING, holder, ops.adapt_datetimefield_value(_lease_expiry(now)), pk, *_LEASABLE,
             holder, ops.adapt_datetimefield_value(now)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def webhook_event_process(*, event_id: str) -> str | None:
    """Fulfil one stored event. Returns its final status, or None if there was nothing to do.

    Raises TransientError-class exceptions (database, broker) for the task to retry; permanent
    failures (ApplicationError with permanent=True) and poison events become dead letters here.
    """
    attempts = _attempt_claim(event_id)
    if attempts is None:
        return None
    if attempts > settings.WEBHOOK_MAX_ATTEMPTS:
        return _dead_letter(event_id, PoisonEvent(f"gave up after {attempts - 1} attempts"), attempts - 1)
    try:
        with transaction.atomic():
            # SKIP LOCKED: if another worker holds this event, it will finish it; this message is spare.
            event = (
                WebhookEvent.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("endpoint")
                .filter(id=event_id, status=WebhookEvent.Status.PROCESSING)
                .first()
            )
            if event is None:
                return None
            # Audit entries are written together at the end, so the chain lock is held only until commit.
            with audit_entries_deferred():
                event.status = webhook_event_fulfil(event=event)
            event.processed_at = timezone.now()
            event.last_error = ""
            event.lease_holder, event.lease_expires_at = "", None
            event.save(update_fields=["status", "processed_at", "last_error", "lease_holder", "lease_expires_at"])
            return event.status
    except ApplicationError as exc:
        if not exc.permanent:
            raise
        return _dead_letter(event_id, exc, attempts)


# --- Fulfilling one stored event: provider payload -> canonical events -> consumers -----------------


def webhook_event_canonical_events(*, event: WebhookEvent, payload: dict | None = None) -> list[dict]:
    """The canonical events of a stored event, built from its stored bytes by its provider's adapter.

    Deterministic: what the admin and the API show is what fulfilment consumed.
    """
    if payload is None:
        payload = json.loads(webhook_event_body(event=event))
    facts = scheme_get(event.endpoint.scheme).facts(payload, provider_event_id=event.provider_event_id)
    return canonical_events_build(
        facts, idempotency_key=event.idempotency_key, source=f"/webhooks/{event.endpoint.slug}", correlation_id=str(event.id)
    )


def webhook_event_fulfil(*, event: WebhookEvent) -> str:
    """Build the stored event's canonical events and hand each to fulfilment. Returns `processed` or
    `ignored`. Runs inside the processing transaction: a failure anywhere rolls every effect back."""
    payload = json.loads(webhook_event_body(event=event))
    endpoint = event.endpoint
    mismatch = scheme_get(endpoint.scheme).mode_mismatch(payload, mode=endpoint.mode)
    canonical_events = [] if mismatch else webhook_event_canonical_events(event=event, payload=payload)
    audit_entry_append(
        action="webhook.received",
        event_id=event.id,
        data={
            "endpoint": endpoint.slug, "type": event.event_type, "provider_event_id": event.provider_event_id,
            "canonical_types": [c["type"] for c in canonical_events],
        },
        dedup_key=f"webhook.received:{event.id}",
    )
    if not canonical_events:
        data = {"type": event.event_type, **({"reason": "livemode_mismatch", "mode": endpoint.mode} if mismatch else {})}
        audit_entry_append(action="event.ignored", event_id=event.id, data=data, dedup_key=f"event.ignored:{event.id}")
        if mismatch:
            logger.warning("event ignored: event=%s reason=livemode_mismatch endpoint_mode=%s", event.id, endpoint.mode)
        return WebhookEvent.Status.IGNORED
    for canonical in canonical_events:
        canonical_event_fulfil(provider=endpoint.scheme, canonical=canonical, event_id=event.id)
    return WebhookEvent.Status.PROCESSED


def webhook_event_fail(*, event_id: str, exc: BaseException) -> None:
    """A transient failure: leave the event retryable and say why (type only: messages may hold data)."""
    WebhookEvent.objects.filter(id=event_id, status=WebhookEvent.Status.PROCESSING).update(
        status=WebhookEvent.Status.FAILED, last_error=type(exc).__name__, lease_holder="", lease_expires_at=None
    )



def webhook_event_attempts(*, event_id: str) -> int:
    return WebhookEvent.objects.values_list("attempts", flat=True).filter(id=event_id).first() or 0


def webhook_event_dead_letter(*, event_id: str, exc: BaseException) -> str:
    return _dead_letter(event_id, exc, webhook_event_attempts(event_id=event_id))


def _dead_letter(event_id: str, exc: BaseException, attempts: int) -> str:
    logger.warning("event dead-lettered: event=%s error=%s attempts=%d", event_id, type(exc).__name__, attempts)
    dead_letter_record(
        task_name="webhooks.tasks.webhook_events_process",
        event_id=event_id,
        args=[event_id],
        exc=exc,
        attempts=attempts,
        traceback_text="".join(traceback.format_exception(exc)),
    )
    WebhookEvent.objects.filter(id=event_id).update(lease_holder="", lease_expires_at=None)
    return WebhookEvent.Status.DEAD
