"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">[,v1=...]`.

The whole `whsec_...` string is the HMAC key. Several v1 values appear while Stripe rolls a secret;
any one matching any of our active secrets verifies.
"""

import json
from datetime import UTC, datetime

from django.views.decorators.debug import sensitive_variables

from providers.base import (
    Scheme,
    SigningKey,
    VerifiedDelivery,
    any_mac_matches,
    event_type_get,
    hmac_sha256,
    json_object_parse,
    provider_event_id_get,
    timestamp_check,
    timestamped_hex_signatures_parse,
)
from providers.exceptions import InvalidSecret, InvalidSignature, MissingSignature
from providers.stripe.facts import stripe_facts
from providers.stripe.samples import stripe_trigger_event

HEADER = "Stripe-Signature"


def _created_at(created) -> datetime | None:
    # A signed payload is still the provider's to get wrong: an absurd time must not fail the delivery.
    if not isinstance(created, int) or isinstance(created, bool):
        return None
    try:
        return datetime.fromtimestamp(created, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _header_parse(header: str) -> tuple[int, list[bytes]]:
    return timestamped_hex_signatures_parse(header, name=HEADER, separator=",", timestamp_key="t", signature_key="v1")


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
        return VerifiedDelivery(
            provider_event_id=provider_event_id_get(payload, "id"),
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
