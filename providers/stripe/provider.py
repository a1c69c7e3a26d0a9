"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">[,v1=...]`.

The whole `whsec_...` string is the HMAC key. Several v1 values appear while Stripe rolls a secret;
any one matching any of our active secrets verifies.
"""

import json
from datetime import UTC, datetime

from django.views.decorators.debug import sensitive_variables

from providers.base import (
    MAX_SIGNATURE_ENTRIES,
    Scheme,
    SigningKey,
    VerifiedDelivery,
    any_mac_matches,
    event_type_get,
    hmac_sha256,
    json_object_parse,
    timestamp_check,
    timestamp_parse,
)
from providers.exceptions import InvalidPayload, InvalidSecret, InvalidSignature, MalformedSignature, MissingSignature
from providers.stripe.facts import stripe_facts
from providers.stripe.samples import stripe_trigger_event

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
    # t, the v1 entries and room for Stripe's test-mode v0: anything longer is not from Stripe, and
    # is refused before it is split.
    if header.count(",") >= 2 * MAX_SIGNATURE_ENTRIES:
        raise MalformedSignature("Stripe-Signature has too many items")
    timestamp = None
    signatures = set()
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise MalformedSignature("Stripe-Signature has an item without '='")
        if key == "t":
            if timestamp is not None:
                raise MalformedSignature("Stripe-Signature has more than one t")
            timestamp = timestamp_parse(value, name="Stripe-Signature t")
        elif key == "v1":
            # Only a 32-byte HMAC-SHA256 in hex can match; anything else is skipped before any crypto,
            # and one unreadable value must not hide a valid one beside it.
            if len(value) != 64:
                continue
            try:
                signatures.add(bytes.fromhex(value))
            except ValueError:
                continue
    if len(signatures) > MAX_SIGNATURE_ENTRIES:
        raise MalformedSignature("Stripe-Signature has too many v1 signatures")
    if timestamp is None or not signatures:
        raise MalformedSignature("Stripe-Signature needs t and at least one v1")
    return timestamp, list(signatures)


class StripeScheme(Scheme):
    name = "stripe"
    volatile_fields = frozenset({"pending_webhooks"})

    def secret_parse(self, secret: str) -> SigningKey:
        if not secret.startswith("whsec_") or len(secret) < 16:
            raise InvalidSecret("a Stripe endpoint secret starts with whsec_")
        return SigningKey(kind="hmac", material=secret.encode())

    @sensitive_variables("body", "keys", "signed", "macs", "payload")
    def verify(self, *, headers, body, keys, tolerance, now):
        header = headers.get(HEADER)
        if not header:
            raise MissingSignature("no Stripe-Signature header")
        timestamp, signatures = _header_parse(header)
        signed = str(timestamp).encode() + b"." + body
        # One HMAC over the body per key, however many entries the header carries.
        macs = [hmac_sha256(key.material, signed) for key in keys if key.kind == "hmac"]
        if not any_mac_matches(macs, signatures):
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

    def facts(self, payload, *, provider_event_id=""):
        return stripe_facts(payload)

    def mode_mismatch(self, payload, *, mode):
        # Only a boolean `livemode` counts; an event without one is judged by its content.
        livemode = payload.get("livemode")
        return isinstance(livemode, bool) and livemode != (mode == "live")

    def sample(self, event_type, *, mode):
        event = stripe_trigger_event(event_type, livemode=mode == "live")
        return json.dumps(event).encode(), event["id"]

    @sensitive_variables("secret", "body", "signature")
    def sign(self, *, secret, body, timestamp, event_id):
        signature = hmac_sha256(secret.encode(), str(timestamp).encode() + b"." + body).hex()
        return {HEADER: f"t={timestamp},v1={signature}"}


scheme = StripeScheme()
