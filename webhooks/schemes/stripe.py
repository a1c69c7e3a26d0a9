"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">[,v1=...]`.

The whole `whsec_...` string is the HMAC key. Several v1 values appear while Stripe rolls a secret;
any one matching any of our active secrets verifies.
"""

import hmac
from datetime import UTC, datetime

from webhooks.exceptions import InvalidPayload, InvalidSecret, InvalidSignature, MalformedSignature, MissingSignature
from webhooks.schemes.base import (
    Scheme,
    SigningKey,
    VerifiedDelivery,
    event_type_get,
    hmac_sha256,
    json_object_parse,
    timestamp_check,
)

HEADER = "Stripe-Signature"
MAX_EVENT_ID_LENGTH = 255  # WebhookEvent.provider_event_id


def _created_at(created) -> datetime | None:
    # A signed payload is still the provider's to get wrong: an absurd time must not fail the delivery.
    if not isinstance(created, int) or isinstance(created, bool):
        return None
    try:
        return datetime.fromtimestamp(created, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _header_parse(header: str) -> tuple[int, list[bytes]]:
    timestamp = None
    signatures = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise MalformedSignature("Stripe-Signature has an item without '='")
        if key == "t":
            # isdigit() alone admits digits int() rejects, such as "²".
            if not (value.isascii() and value.isdigit()):
                raise MalformedSignature("Stripe-Signature t is not a unix timestamp")
            timestamp = int(value)
        elif key == "v1":
            try:
                signatures.append(bytes.fromhex(value))
            except ValueError:
                continue  # one unreadable value must not hide a valid one beside it
    if timestamp is None or not signatures:
        raise MalformedSignature("Stripe-Signature needs t and at least one v1")
    return timestamp, signatures


class StripeScheme(Scheme):
    name = "stripe"
    volatile_fields = frozenset({"pending_webhooks"})

    def secret_parse(self, secret: str) -> SigningKey:
        if not secret.startswith("whsec_") or len(secret) < 16:
            raise InvalidSecret("a Stripe endpoint secret starts with whsec_")
        return SigningKey(kind="hmac", material=secret.encode())

    def verify(self, *, headers, body, keys, tolerance, now):
        header = headers.get(HEADER)
        if not header:
            raise MissingSignature("no Stripe-Signature header")
        timestamp, signatures = _header_parse(header)
        signed = str(timestamp).encode() + b"." + body
        if not any(
            hmac.compare_digest(hmac_sha256(key.material, signed), signature)
            for key in keys
            if key.kind == "hmac"
            for signature in signatures
        ):
            raise InvalidSignature("no signature matches an active secret")
        timestamp_check(timestamp, tolerance=tolerance, now=now)
        payload = json_object_parse(body)
        event_id = payload.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise InvalidPayload("the payload has no event id")
        if len(event_id) > MAX_EVENT_ID_LENGTH or "\x00" in event_id:
            raise InvalidPayload("the payload's event id is too long or holds a NUL character")
        return VerifiedDelivery(
            provider_event_id=event_id,
            event_type=event_type_get(payload),
            payload=payload,
            provider_created_at=_created_at(payload.get("created")),
            used_headers={HEADER: header},
        )

    def facts(self, payload):
        from webhooks.schemes.stripe_facts import stripe_facts

        return stripe_facts(payload)

    def sign(self, *, secret, body, timestamp, event_id):
        signature = hmac_sha256(secret.encode(), str(timestamp).encode() + b"." + body).hex()
        return {HEADER: f"t={timestamp},v1={signature}"}


scheme = StripeScheme()
