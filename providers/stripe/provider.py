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
    event_type_get,
    hmac_sha256,
    provider_event_id_get,
    timestamped_hmac_payload,
)
from providers.exceptions import InvalidSecret
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



class StripeScheme(Scheme):
    name = "stripe"
    volatile_fields = frozenset({"pending_webhooks"})

    def secret_parse(self, secret: str) -> SigningKey:
        if not secret.startswith("whsec_") or len(secret) < 16:
            raise InvalidSecret("a Stripe endpoint secret starts with whsec_ and is at least 16 characters long")
        return SigningKey(kind="hmac", material=secret.encode())

    @sensitive_variables("body", "keys", "signed", "macs", "payload")
    def verify(self, *, headers, body, keys, tolerance, now):
        payload, header = timestamped_hmac_payload(
            headers=headers, body=body, keys=keys, tolerance=tolerance, now=now,
            header_name=HEADER, separator=",", timestamp_key="t", signature_key="v1", joiner=b".",
        )
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
