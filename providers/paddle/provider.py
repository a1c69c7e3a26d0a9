"""Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex HMAC-SHA256 of "{ts}:{body}">[;h1=...]`.

The whole notification destination secret (`pdl_ntfset_…`) is the HMAC key. Paddle sends several h1
values while a secret rotates; any one matching any of our active secrets verifies. The event id
is the payload's `event_id` (`evt_…`), its time `occurred_at` (RFC 3339).
"""

import json

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
from providers.paddle.facts import paddle_facts, rfc3339_parse
from providers.paddle.samples import paddle_trigger_event

HEADER = "Paddle-Signature"
SECRET_PREFIX = "pdl_ntfset_"



class PaddleScheme(Scheme):
    name = "paddle"
    # A notification replayed from Paddle's dashboard or API is a new notification (ntf_…) of the
    # same event (evt_…): the same content.
    volatile_fields = frozenset({"notification_id"})

    def secret_parse(self, secret: str) -> SigningKey:
        if not secret.startswith(SECRET_PREFIX) or len(secret) < len(SECRET_PREFIX) + 16 or not secret.isascii():
            raise InvalidSecret("a Paddle notification secret starts with pdl_ntfset_")
        return SigningKey(kind="hmac", material=secret.encode())

    @sensitive_variables("body", "keys", "signed", "macs", "payload")
    def verify(self, *, headers, body, keys, tolerance, now):
        payload, header = timestamped_hmac_payload(
            headers=headers, body=body, keys=keys, tolerance=tolerance, now=now,
            header_name=HEADER, separator=";", timestamp_key="ts", signature_key="h1", joiner=b":",
        )
        return VerifiedDelivery(
            provider_event_id=provider_event_id_get(payload, "event_id"),
            event_type=event_type_get(payload, "event_type"),
            payload=payload,
            provider_created_at=rfc3339_parse(payload.get("occurred_at")),
            used_headers={HEADER: header},
        )

    def facts(self, payload, *, provider_event_id=""):
        return paddle_facts(payload)

    # mode_mismatch: Paddle's payloads do not say sandbox or live (the two are separate accounts
    # with separate secrets), so the base class's False stands.

    def sample(self, event_type, *, mode):
        event = paddle_trigger_event(event_type)
        return json.dumps(event).encode(), event["event_id"]

    @sensitive_variables("secret", "body", "signature")
    def sign(self, *, secret, body, timestamp, event_id):
        signature = hmac_sha256(secret.encode(), str(timestamp).encode() + b":" + body).hex()
        return {HEADER: f"ts={timestamp};h1={signature}"}


scheme = PaddleScheme()
