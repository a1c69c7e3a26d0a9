"""Standard Webhooks (https://www.standardwebhooks.com/), version v1 (HMAC) and v1a (ed25519).

Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`; `webhook-signature` holds
space-separated `v1,<base64>` / `v1a,<base64>` entries, any of which may match. Secrets are
`whsec_<base64 key>`; ed25519 public keys `whpk_<base64 key>`.
"""

import base64
import binascii
import json
import time
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature as Ed25519InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.views.decorators.debug import sensitive_variables

from providers.base import (
    MAX_EVENT_ID_LENGTH,
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
from providers.exceptions import InvalidSecret, InvalidSignature, MalformedSignature, MissingSignature
from providers.standard.samples import standard_event

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
PUBLIC_KEY_PREFIX = "whpk_"
PRIVATE_KEY_PREFIX = "whsk_"
# The only signature sizes that can verify: HMAC-SHA256 and ed25519.
SIGNATURE_BYTES = {"v1": 32, "v1a": 64}


def _b64decode(value: str) -> bytes:
    # Some senders drop base64 padding; the reference implementation accepts that too.
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def _signatures_parse(header: str) -> tuple[list[bytes], list[bytes]]:
    """The distinct (v1 HMACs, v1a ed25519 signatures) of the header. An entry of another version or
    of the wrong size cannot verify and is skipped before any crypto; one unreadable entry must not
    hide a valid one beside it."""
    entries = header.split(None, MAX_SIGNATURE_ENTRIES)
    if len(entries) > MAX_SIGNATURE_ENTRIES:
        raise MalformedSignature("webhook-signature has too many entries")
    found: dict[str, set[bytes]] = {"v1": set(), "v1a": set()}
    for entry in entries:
        version, sep, value = entry.partition(",")
        size = SIGNATURE_BYTES.get(version)
        # base64 of n bytes is at most 4 * ceil(n / 3) characters; longer values are not read.
        if not sep or size is None or not value or len(value) > 4 * -(-size // 3):
            continue
        try:
            signature = _b64decode(value)
        except (binascii.Error, ValueError):
            continue
        if len(signature) == size:
            found[version].add(signature)
    if not found["v1"] and not found["v1a"]:
        raise MalformedSignature("webhook-signature has no usable version,signature entry")
    return list(found["v1"]), list(found["v1a"])


@sensitive_variables("keys", "signed", "macs")
def _any_signature_matches(keys, signed: bytes, hmacs: list[bytes], ed25519s: list[bytes]) -> bool:
    # One HMAC over the body per key, however many entries the header carries.
    macs = [hmac_sha256(key.material, signed) for key in keys if key.kind == "hmac"] if hmacs else []
    if any_mac_matches(macs, hmacs):
        return True
    # ed25519 hashes the message inside each verify; MAX_SIGNATURE_ENTRIES bounds how many run.
    for key in keys:
        if key.kind != "ed25519":
            continue
        for signature in ed25519s:
            try:
                key.material.verify(signature, signed)
            except Ed25519InvalidSignature:
                continue
            return True
    return False


class StandardWebhooksScheme(Scheme):
    name = "standard"

    def secret_parse(self, secret: str) -> SigningKey:
        try:
            if secret.startswith(SECRET_PREFIX):
                key = _b64decode(secret.removeprefix(SECRET_PREFIX))
                if not 24 <= len(key) <= 64:
                    raise InvalidSecret("a whsec_ key is 24 to 64 bytes")
                return SigningKey(kind="hmac", material=key)
            if secret.startswith(PUBLIC_KEY_PREFIX):
                raw = _b64decode(secret.removeprefix(PUBLIC_KEY_PREFIX))
                return SigningKey(kind="ed25519", material=Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError):
            raise InvalidSecret("the secret is not valid base64 of the right length") from None
        raise InvalidSecret("a Standard Webhooks secret starts with whsec_ (HMAC) or whpk_ (ed25519 public key)")

    @sensitive_variables("body", "keys", "signed", "payload")
    def verify(self, *, headers, body, keys, tolerance, now):
        event_id = headers.get(ID_HEADER)
        timestamp_raw = headers.get(TIMESTAMP_HEADER)
        signature_header = headers.get(SIGNATURE_HEADER)
        if not event_id or not timestamp_raw or not signature_header:
            raise MissingSignature("webhook-id, webhook-timestamp and webhook-signature are required")
        timestamp = timestamp_parse(timestamp_raw, name="webhook-timestamp")
        if len(event_id) > MAX_EVENT_ID_LENGTH or "\x00" in event_id:
            raise MalformedSignature("webhook-id is too long or holds a NUL character")
        hmacs, ed25519s = _signatures_parse(signature_header)
        signed = f"{event_id}.{timestamp}.".encode() + body
        if not _any_signature_matches(keys, signed, hmacs, ed25519s):
            raise InvalidSignature("no signature matches an active secret")
        timestamp_check(timestamp, tolerance=tolerance, now=now)
        payload = json_object_parse(body)
        return VerifiedDelivery(
            provider_event_id=event_id,
            event_type=event_type_get(payload),
            payload=payload,
            provider_created_at=datetime.fromtimestamp(timestamp, UTC),
            used_headers={ID_HEADER: event_id, TIMESTAMP_HEADER: timestamp_raw, SIGNATURE_HEADER: signature_header},
        )

    @sensitive_variables("secret", "body", "signed", "private", "key")
    def sign(self, *, secret, body, timestamp, event_id):
        signed = f"{event_id}.{timestamp}.".encode() + body
        if secret.startswith(PRIVATE_KEY_PREFIX):
            private = Ed25519PrivateKey.from_private_bytes(_b64decode(secret.removeprefix(PRIVATE_KEY_PREFIX)))
            signature = "v1a," + base64.b64encode(private.sign(signed)).decode()
        else:
            key = _b64decode(secret.removeprefix(SECRET_PREFIX))
            signature = "v1," + base64.b64encode(hmac_sha256(key, signed)).decode()
        return {ID_HEADER: event_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}

    def sample(self, event_type, *, mode):
        return json.dumps(standard_event(event_type)).encode(), f"msg_test_{int(time.time() * 1000)}"


scheme = StandardWebhooksScheme()
