"""Receiving: verify a delivery over its raw bytes with the endpoint's current keys and store each
event it carries exactly once (`<slug>:<provider event id>`), encrypted at rest. Answers in one
round trip on the hot path; nothing is stored for a delivery that does not verify."""

import json
import logging
import struct
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from config import encryption, tracing
from config.db import row_insert_keyed_if_current
from providers import SigningKey, VerifiedDelivery, scheme_get
from providers.base import event_time_utc
from webhooks import metrics
from webhooks.exceptions import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidSignature,
    SignatureError,
    UnknownEndpoint,
)
from webhooks.models import EventKey, WebhookEndpoint, WebhookEvent

logger = logging.getLogger(__name__)



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
            tracing.span_annotate(endpoint=entry.slug)
            metrics.signature_failures.labels(endpoint=entry.slug, reason=exc.code).inc()
            logger.warning("webhook refused: endpoint=%s reason=%s", entry.slug, exc.code)
            raise
        if not deliveries:
            raise InvalidPayload("the body carries no event")
        scheme = scheme_get(entry.scheme)
        results = _events_store(entry, scheme, deliveries, body)
        if results is not None:
            break
        # Stale keys (or the endpoint was deactivated or replaced): verify again with what is current.
        entry, cached = _endpoint_keys_load(slug), False
    else:
        # Two more secret changes landed during this request: answer 503 (retry), store nothing new.
        raise OperationalError("the endpoint's secrets changed while the request was verified")
    tracing.span_annotate(event_id=results[0][0], endpoint=entry.slug)
    return ReceiveResult(event_id=results[0][0], created=any(created for _, created in results), answer=scheme.accepted_answer)


@sensitive_variables("body")
def _events_store(entry: _EndpointKeys, scheme, deliveries: list[VerifiedDelivery], body: bytes) -> list[tuple[str, bool]] | None:
    """Store each delivered event once: [(event id, created)], or None when the keys were stale.

    One event (every scheme but Adyen's item lists) is one autocommitted statement on the hot path.
    Several are all or nothing, in one transaction: an idempotency conflict or stale keys on any item
    stores none of them, so the provider's retry of the whole request finds a clean slate. Inserted in
    key order, so two overlapping requests cannot deadlock on each other's rows.
    """
    if len(deliveries) == 1:
        event, stored, current = _event_insert(entry, scheme, deliveries[0], body)
        return [_stored_or_duplicate(entry, event, stored)] if current == entry.version else None
    with transaction.atomic():
        results = []
        for delivery in sorted(deliveries, key=lambda d: d.provider_event_id):
            event, stored, current = _event_insert(entry, scheme, delivery, body)
            if current != entry.version:
                transaction.set_rollback(True)
                return None
            results.append(_stored_or_duplicate(entry, event, stored))  # a conflict rolls back every item
        return results


@sensitive_variables("body")
def _event_insert(entry: _EndpointKeys, scheme, delivery: VerifiedDelivery, body: bytes):
    """Store the event and its idempotency key in one statement: (event, stored key or None, the
    endpoint's current secrets version). The key lives in its own table (webhooks_eventkey): the
    events table is partitioned by month and cannot hold a unique key of its own."""
    event = WebhookEvent(
        endpoint_id=entry.id,
        idempotency_key=f"{entry.slug}:{delivery.provider_event_id}",
        provider_event_id=delivery.provider_event_id,
        event_type=delivery.event_type,
        content_hash=scheme.content_hash(delivery.payload),
        # One token for the body and the headers it was signed with (one encryption, not two):
        # webhook_event_body / webhook_event_headers read both formats.
        body_encrypted=encryption.encrypt(_body_and_headers_frame(body, delivery.used_headers)),
        headers_encrypted=b"",
        received_at=timezone.now(),
        provider_created_at=event_time_utc(delivery.provider_created_at),  # a provider's absurd time is no time
        traceparent=tracing.traceparent_current(),  # its processing joins this request's trace ("" when off)
    )
    key = EventKey(
        idempotency_key=event.idempotency_key, event_id=event.id, content_hash=event.content_hash, received_at=event.received_at
    )
    _, current, stored = row_insert_keyed_if_current(
        event, key=key, owner=WebhookEndpoint, owner_id=entry.id,
        version_field="secrets_version", version=entry.version, live_field="is_active",
    )
    return event, stored, current


def _stored_or_duplicate(entry: _EndpointKeys, event: WebhookEvent, stored: EventKey | None) -> tuple[str, bool]:
    """(event id, created): a new row, or the stored one when its content matches; a 409 otherwise.
    A duplicate is answered from the key row the insert statement returned: no second round trip."""
    if stored is None:
        metrics.events_received.labels(endpoint=entry.slug, outcome="accepted").inc()
        return str(event.id), True
    if stored.content_hash != event.content_hash:
        metrics.events_received.labels(endpoint=entry.slug, outcome="conflict").inc()
        logger.warning("idempotency conflict: endpoint=%s event=%s", entry.slug, stored.event_id)
        raise IdempotencyConflict(
            "this idempotency key was stored with different content", extra={"event_id": str(stored.event_id)}
        )
    metrics.events_received.labels(endpoint=entry.slug, outcome="duplicate").inc()
    return str(stored.event_id), False


def _headers_serialize(headers: dict[str, str]) -> bytes:
    return json.dumps(headers, separators=(",", ":")).encode()


# Stored events come in two formats:
# - up to issue 13: body_encrypted = token(raw body), headers_encrypted = token(headers JSON);
# - since: body_encrypted = token(frame), headers_encrypted = b"" (one encryption per event, not
#   two). The frame is _FRAME_MARK, the headers JSON's length (4 bytes, big-endian), the headers
#   JSON, then the raw body as received.
# The mark tells them apart from the body token alone (readers often defer the headers column):
# a stored body is a JSON text, whose first character (whitespace or a value) is never U+0000, so
# in none of the encodings json.loads has ever accepted (UTF-8, -16, -32) does it start with four
# zero bytes.
_FRAME_MARK = b"\x00\x00\x00\x00ph1"
_FRAME_LENGTH = struct.Struct(">I")


def _body_and_headers_frame(body: bytes, headers: dict[str, str]) -> bytes:
    serialized = _headers_serialize(headers)
    return _FRAME_MARK + _FRAME_LENGTH.pack(len(serialized)) + serialized + body


def _frame_split(plaintext: bytes) -> tuple[bytes, bytes] | None:
    """(raw body, headers JSON) from a frame; None for an old-format body."""
    if not plaintext.startswith(_FRAME_MARK):
        return None
    start = len(_FRAME_MARK) + _FRAME_LENGTH.size
    (length,) = _FRAME_LENGTH.unpack_from(plaintext, len(_FRAME_MARK))
    return plaintext[start + length :], plaintext[start : start + length]


def webhook_event_body(*, event: WebhookEvent) -> bytes:
    plaintext = encryption.decrypt(event.body_encrypted)
    frame = _frame_split(plaintext)
    return plaintext if frame is None else frame[0]


def webhook_event_headers(*, event: WebhookEvent) -> dict[str, str]:
    frame = _frame_split(encryption.decrypt(event.body_encrypted))
    serialized = encryption.decrypt(event.headers_encrypted) if frame is None else frame[1]
    return json.loads(serialized)
