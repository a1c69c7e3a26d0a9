"""Lemon Squeezy: `X-Signature: <hex HMAC-SHA256 of the raw body>`, keyed by the webhook's signing secret.

The signing secret is whatever string the operator typed in Lemon Squeezy (6 to 40 characters
there); its UTF-8 bytes are the HMAC key. The signature covers the body only: no timestamp is
signed, so there is no tolerance window and a captured delivery verifies again when replayed —
which the idempotency key turns into a duplicate. Lemon Squeezy sends no event id either; the id
is derived from what the body says happened to which object, and when:
`<meta.event_name>:<data.type>:<data.id>:<data.attributes.updated_at>`.
"""

import json

from django.views.decorators.debug import sensitive_variables

from providers.base import Scheme, SigningKey, VerifiedDelivery, any_mac_matches, hmac_sha256, json_object_parse
from providers.exceptions import InvalidPayload, InvalidSecret, InvalidSignature, MalformedSignature, MissingSignature
from providers.lemonsqueezy.facts import datetime_parse, lemonsqueezy_facts, object_id
from providers.lemonsqueezy.samples import lemonsqueezy_sample_event

HEADER = "X-Signature"
SIGNATURE_HEX_LENGTH = 64  # one HMAC-SHA256
MAX_SECRET_LENGTH = 256  # Lemon Squeezy allows 40; leave room, refuse what cannot be a pasted secret
MAX_PART_LENGTH = 60  # each part of the derived id (event names, types, ids, times are short): 4 x 60 + 3 <= 255


def _signature_parse(header: str) -> bytes:
    # Exactly one hex HMAC-SHA256: anything else (longer, several values, repeated headers joined
    # with commas) is refused by its length before it is decoded, and before any crypto.
    value = header.strip()
    if len(value) != SIGNATURE_HEX_LENGTH:
        raise MalformedSignature("X-Signature is not one hex HMAC-SHA256")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise MalformedSignature("X-Signature is not hex") from None


def _part(value: object, name: str) -> str:
    part = object_id(value) if name == "data.id" else value
    if not isinstance(part, str) or not part.strip() or len(part) > MAX_PART_LENGTH or "\x00" in part:
        raise InvalidPayload(f"the payload has no usable {name}")
    return part


def delivery_id(payload: dict) -> str:
    """The provider event id payhook derives for a verified Lemon Squeezy body (see the module doc)."""
    meta, data = payload.get("meta"), payload.get("data")
    if not isinstance(meta, dict) or not isinstance(data, dict) or not isinstance(data.get("attributes"), dict):
        raise InvalidPayload("the payload lacks meta or data.attributes")
    updated_at = _part(data["attributes"].get("updated_at"), "data.attributes.updated_at")
    if datetime_parse(updated_at) is None:
        raise InvalidPayload("data.attributes.updated_at is not an ISO 8601 time")
    parts = [_part(meta.get("event_name"), "meta.event_name"), _part(data.get("type"), "data.type"),
             _part(data.get("id"), "data.id"), updated_at]
    return ":".join(parts)


class LemonSqueezyScheme(Scheme):
    name = "lemonsqueezy"

    def secret_parse(self, secret: str) -> SigningKey:
        if not secret or not secret.strip():
            raise InvalidSecret("a Lemon Squeezy signing secret cannot be empty")
        if secret != secret.strip():
            raise InvalidSecret("the signing secret starts or ends with whitespace (a paste error?)")
        if len(secret) > MAX_SECRET_LENGTH or not secret.isprintable():
            raise InvalidSecret(f"a Lemon Squeezy signing secret is at most {MAX_SECRET_LENGTH} printable characters")
        return SigningKey(kind="hmac", material=secret.encode())

    @sensitive_variables("body", "keys", "macs", "payload")
    def verify(self, *, headers, body, keys, tolerance, now):
        header = headers.get(HEADER)
        if not header:
            raise MissingSignature("no X-Signature header")
        signature = _signature_parse(header)
        # One HMAC over the body per active secret.
        macs = [hmac_sha256(key.material, body) for key in keys if key.kind == "hmac"]
        if not any_mac_matches(macs, [signature]):
            raise InvalidSignature("the signature matches no active secret")
        payload = json_object_parse(body)
        event_id = delivery_id(payload)
        return VerifiedDelivery(
            provider_event_id=event_id,
            event_type=payload["meta"]["event_name"][:128],
            payload=payload,
            provider_created_at=datetime_parse(payload["data"]["attributes"]["updated_at"]),
            used_headers={HEADER: header},
        )

    def facts(self, payload, *, provider_event_id=""):
        return lemonsqueezy_facts(payload)

    def mode_mismatch(self, payload, *, mode):
        # Lemon Squeezy marks test-mode events `meta.test_mode` (and `data.attributes.test_mode`).
        meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
        test_mode = meta.get("test_mode")
        if not isinstance(test_mode, bool):
            attributes = (payload.get("data") or {}).get("attributes") if isinstance(payload.get("data"), dict) else None
            test_mode = attributes.get("test_mode") if isinstance(attributes, dict) else None
        # A live endpoint fulfils only what says `test_mode: false`; anything else (missing, null, a
        # string) is stored and ignored. A test endpoint ignores only what says it is live.
        if mode == "live":
            return test_mode is not False
        return test_mode is False

    def sample(self, event_type, *, mode):
        event = lemonsqueezy_sample_event(event_type, test_mode=mode == "test")
        return json.dumps(event).encode(), delivery_id(event)

    @sensitive_variables("secret", "body")
    def sign(self, *, secret, body, timestamp, event_id):
        # Lemon Squeezy signs the body alone: timestamp and event_id are not part of its scheme.
        return {HEADER: hmac_sha256(secret.encode(), body).hex()}


scheme = LemonSqueezyScheme()
