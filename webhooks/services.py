import hashlib
import hmac
import json
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

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


@sensitive_variables("body", "endpoint", "delivery", "event")
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

    Picks `received` events older than WEBHOOK_REDISPATCH_AFTER_SECONDS, and `processing`/`failed`
    ones older than WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS (their worker died with the message, or the
    retry message was lost), unless the sweep already sent them within that time. A message sent
    twice is harmless: processing claims each event once and skips finished ones.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_AFTER_SECONDS)
    lost = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS)
    waiting = Q(status=WebhookEvent.Status.RECEIVED, received_at__lt=grace) | Q(
        # Claimed by a worker that died, or waiting on a retry whose message was lost.
        status__in=[WebhookEvent.Status.PROCESSING, WebhookEvent.Status.FAILED], received_at__lt=lost
    )
    with transaction.atomic():
        event_ids = list(
            WebhookEvent.objects.filter(waiting)
            .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=lost))
            .order_by("received_at")
            .values_list("id", flat=True)[:limit]
        )
        if not event_ids:
            return 0
        # Published inside the transaction: if the broker is away, the rows stay unmarked.
        webhook_events_publish(event_ids=event_ids)
        WebhookEvent.objects.filter(id__in=event_ids).update(dispatched_at=now)
    logger.info("sweep dispatched %d stored events", len(event_ids))
    return len(event_ids)


# --- Processing -------------------------------------------------------------------------------------


class PoisonEvent(Exception):
    """An event whose processing keeps dying (the worker is killed) before it can fail cleanly."""


def _attempt_claim(event_id: str) -> int | None:
    """Count an attempt in its own committed transaction, before any work.

    Brokers do not count redeliveries, so a poison event that kills its worker every time would loop
    forever; this counter survives the crash. Returns the attempt number, or None when the event is
    not waiting for processing (already done, ignored or dead).
    """
    meta, quote = WebhookEvent._meta, connection.ops.quote_name
    pk = meta.pk.get_db_prep_value(meta.pk.to_python(event_id), connection)
    with connection.cursor() as cursor:  # one autocommitted statement
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET attempts = attempts + 1, status = %s "
            f"WHERE id = %s AND status IN (%s, %s, %s) RETURNING attempts",
            [WebhookEvent.Status.PROCESSING, pk, WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING,
             WebhookEvent.Status.FAILED],
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
            event.save(update_fields=["status", "processed_at", "last_error"])
            return event.status
    except ApplicationError as exc:
        if not exc.permanent:
            raise
        return _dead_letter(event_id, exc, attempts)


def webhook_event_fail(*, event_id: str, exc: BaseException) -> None:
    """A transient failure: leave the event retryable and say why (type only: messages may hold data)."""
    WebhookEvent.objects.filter(id=event_id, status=WebhookEvent.Status.PROCESSING).update(
        status=WebhookEvent.Status.FAILED, last_error=type(exc).__name__
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
    return WebhookEvent.Status.DEAD
