import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config import encryption
from config.db import rows_insert_new
from config.exceptions import ApplicationError
from webhooks import metrics
from webhooks.exceptions import (
    EndpointNotFound,
    IdempotencyConflict,
    InvalidSecret,
    SignatureError,
    UnknownEndpoint,
    WebhookError,
)
from webhooks.models import EndpointSecret, WebhookEndpoint, WebhookEvent
from webhooks.schemes import SCHEMES, SigningKey, scheme_get

logger = logging.getLogger(__name__)


# --- Endpoints and secrets ----------------------------------------------------------------------


def secret_fingerprint(secret: str) -> str:
    return hmac.new(settings.BLIND_INDEX_KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()[:16]


def _secret_hint(secret: str) -> str:
    prefix, sep, _ = secret.partition("_")
    return f"{prefix}_" if sep else ""


@transaction.atomic
def webhook_endpoint_create(*, slug: str, scheme: str, secret: str, description: str = "") -> WebhookEndpoint:
    if scheme not in SCHEMES:
        raise InvalidSecret(f"unknown scheme {scheme!r}; known: {', '.join(sorted(SCHEMES))}")
    endpoint, created = WebhookEndpoint.objects.get_or_create(slug=slug, defaults={"scheme": scheme, "description": description})
    if not created:
        raise WebhookError(f"endpoint {slug!r} already exists")
    endpoint_secret_add(endpoint=endpoint, secret=secret)
    return endpoint


@transaction.atomic
def endpoint_secret_add(*, endpoint: WebhookEndpoint, secret: str) -> EndpointSecret:
    key = scheme_get(endpoint.scheme).secret_parse(secret)
    row, created = EndpointSecret.objects.get_or_create(
        endpoint=endpoint,
        fingerprint=secret_fingerprint(secret),
        defaults={"kind": key.kind, "value_encrypted": encryption.encrypt(secret.encode()), "hint": _secret_hint(secret)},
    )
    if not created:
        raise InvalidSecret("this secret is already active on the endpoint")
    transaction.on_commit(endpoint_cache_clear)
    return row


@transaction.atomic
def endpoint_secret_remove(*, endpoint: WebhookEndpoint, secret: str) -> None:
    deleted, _ = EndpointSecret.objects.filter(endpoint=endpoint, fingerprint=secret_fingerprint(secret)).delete()
    if not deleted:
        raise InvalidSecret("no such secret on this endpoint")
    transaction.on_commit(endpoint_cache_clear)


def webhook_endpoint_get(*, slug: str) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.get(slug=slug)
    except WebhookEndpoint.DoesNotExist:
        raise EndpointNotFound(f"no endpoint {slug!r}") from None


def endpoint_secrets_decrypted(*, endpoint: WebhookEndpoint) -> list[str]:
    return [encryption.decrypt(row.value_encrypted).decode() for row in endpoint.secrets.all()]


# --- Receiving ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EndpointKeys:
    id: int
    slug: str
    scheme: str
    keys: tuple[SigningKey, ...]
    loaded_at: float


_endpoint_cache: dict[str, _EndpointKeys] = {}


def endpoint_cache_clear() -> None:
    _endpoint_cache.clear()


def _endpoint_keys_get(slug: str) -> _EndpointKeys:
    """The endpoint and its parsed keys, cached in-process for WEBHOOK_ENDPOINT_CACHE_SECONDS.

    Each request would otherwise pay two queries and a decryption per secret. A secret added or
    removed by another process takes effect here within the cache lifetime.
    """
    cached = _endpoint_cache.get(slug)
    if cached is not None and time.monotonic() - cached.loaded_at < settings.WEBHOOK_ENDPOINT_CACHE_SECONDS:
        return cached
    endpoint = WebhookEndpoint.objects.filter(slug=slug, is_active=True).prefetch_related("secrets").first()
    if endpoint is None:
        raise UnknownEndpoint("no active endpoint with this slug")
    scheme = scheme_get(endpoint.scheme)
    keys = tuple(scheme.secret_parse(secret) for secret in endpoint_secrets_decrypted(endpoint=endpoint))
    entry = _EndpointKeys(endpoint.id, endpoint.slug, endpoint.scheme, keys, time.monotonic())
    _endpoint_cache[slug] = entry
    return entry


@dataclass(frozen=True)
class ReceiveResult:
    event_id: str
    created: bool


def webhook_event_receive(*, slug: str, body: bytes, headers) -> ReceiveResult:
    """Verify a delivery over its raw bytes and store it once under `<slug>:<provider event id>`.

    Raises a WebhookError for every refusal; nothing is stored unless the signature verifies.
    """
    endpoint = _endpoint_keys_get(slug)
    scheme = scheme_get(endpoint.scheme)
    try:
        delivery = scheme.verify(
            headers=headers, body=body, keys=endpoint.keys, tolerance=settings.WEBHOOK_TOLERANCE_SECONDS, now=time.time()
        )
    except SignatureError as exc:
        metrics.signature_failures.labels(endpoint=endpoint.slug, reason=exc.code).inc()
        logger.warning("webhook refused: endpoint=%s reason=%s", endpoint.slug, exc.code)
        raise
    event = WebhookEvent(
        endpoint_id=endpoint.id,
        idempotency_key=f"{endpoint.slug}:{delivery.provider_event_id}",
        provider_event_id=delivery.provider_event_id,
        event_type=delivery.event_type,
        content_hash=scheme.content_hash(delivery.payload),
        body_encrypted=encryption.encrypt(body),
        headers_encrypted=encryption.encrypt(_headers_serialize(delivery.used_headers)),
        received_at=timezone.now(),
        provider_created_at=delivery.provider_created_at,
    )
    if rows_insert_new([event], conflict_fields=("idempotency_key",)):
        metrics.events_received.labels(endpoint=endpoint.slug, outcome="accepted").inc()
        return ReceiveResult(event_id=str(event.id), created=True)

    existing_id, existing_hash = WebhookEvent.objects.filter(idempotency_key=event.idempotency_key).values_list(
        "id", "content_hash"
    ).get()
    if existing_hash != event.content_hash:
        metrics.events_received.labels(endpoint=endpoint.slug, outcome="conflict").inc()
        logger.warning("idempotency conflict: endpoint=%s event=%s", endpoint.slug, existing_id)
        raise IdempotencyConflict(
            "this idempotency key was stored with different content", extra={"event_id": str(existing_id)}
        )
    metrics.events_received.labels(endpoint=endpoint.slug, outcome="duplicate").inc()
    return ReceiveResult(event_id=str(existing_id), created=False)


def _headers_serialize(headers: dict[str, str]) -> bytes:
    return json.dumps(headers, separators=(",", ":")).encode()


def webhook_event_body(*, event: WebhookEvent) -> bytes:
    return encryption.decrypt(event.body_encrypted)


def webhook_event_headers(*, event: WebhookEvent) -> dict[str, str]:
    return json.loads(encryption.decrypt(event.headers_encrypted))


# --- Handing events to Celery ---------------------------------------------------------------------


def webhook_events_publish(*, event_ids: list) -> None:
    """Hand events to Celery, WEBHOOK_DISPATCH_BATCH_SIZE ids per message. Raises if the broker is
    away (no retry loop here: each caller has its own fallback — the relay's rollback, the sweep)."""
    from webhooks.tasks import webhook_events_process

    ids = [str(event_id) for event_id in event_ids]
    batch_size = settings.WEBHOOK_DISPATCH_BATCH_SIZE
    for start in range(0, len(ids), batch_size):
        webhook_events_process.apply_async(args=[ids[start : start + batch_size]], retry=False)


def webhook_events_dispatch(*, limit: int = 1000) -> int:
    """The sweep, a safety net behind the outbox relay: republish what is stuck. Returns how many.

    Picks, oldest first:
    - `received` events no relay published within WEBHOOK_REDISPATCH_AFTER_SECONDS;
    - events whose worker lease lapsed (the holder died: its message stays unacknowledged in the
      broker until the visibility timeout, an hour); the lease is cleared so each lapse is
      republished once, and the event can be claimed at once;
    - unleased `received`/`processing`/`failed` events whose message must be lost (published more
      than WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS ago: the broker lost it, or a retry's delay outlived it).
    Rows a worker is processing right now are row-locked and skipped. A message sent twice is
    harmless: processing claims each event once and skips finished ones.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_AFTER_SECONDS)
    lost = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS)
    Status = WebhookEvent.Status
    unpublished = Q(status=Status.RECEIVED, dispatched_at__isnull=True, received_at__lt=grace)
    lease_lapsed = Q(status__in=[Status.RECEIVED, Status.PROCESSING, Status.FAILED], lease_expires_at__lt=now)
    message_lost = Q(
        status__in=[Status.RECEIVED, Status.PROCESSING, Status.FAILED], lease_expires_at__isnull=True, received_at__lt=lost
    ) & (Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=lost))
    with transaction.atomic():
        rows = list(
            WebhookEvent.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(unpublished | lease_lapsed | message_lost)
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
    from audit.services import audit_entries_deferred
    from fulfillment.services import webhook_event_fulfil

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
    from webhooks.deadletters import dead_letter_record

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
