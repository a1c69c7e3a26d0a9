"""Standard Webhooks (https://www.standardwebhooks.com/), version v1 (HMAC) and v1a (ed25519).

Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`; `webhook-signature` holds
space-separated `v1,<base64>` / `v1a,<base64>` entries, any of which may match. Secrets are
`whsec_<base64 key>`; ed25519 public keys `whpk_<base64 key>`.
"""

import base64
import binascii
import hmac
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature as Ed25519InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from webhooks.exceptions import InvalidSecret, InvalidSignature, MalformedSignature, MissingSignature
from webhooks.schemes.base import (
    Scheme,
    SigningKey,
    VerifiedDelivery,
    event_type_get,
    hmac_sha256,
    json_object_parse,
    timestamp_check,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
PUBLIC_KEY_PREFIX = "whpk_"
PRIVATE_KEY_PREFIX = "whsk_"


def _b64decode(value: str) -> bytes:
    # Some senders drop base64 padding; the reference implementation accepts that too.
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def _signatures_parse(header: str) -> list[tuple[str, bytes]]:
    entries = []
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep:
            continue
        try:
            entries.append((version, _b64decode(value)))
        except (binascii.Error, ValueError):
            continue
    if not entries:
        raise MalformedSignature("webhook-signature has no version,signature entry")
    return entries


def _matches(key: SigningKey, version: str, signature: bytes, signed: bytes) -> bool:
    if version == "v1" and key.kind == "hmac":
        return hmac.compare_digest(hmac_sha256(key.material, signed), signature)
    if version == "v1a" and key.kind == "ed25519":
        try:
            key.material.verify(signature, signed)
        except Ed25519InvalidSignature:
            return False
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

    def verify(self, *, headers, body, keys, tolerance, now):
        event_id = headers.get(ID_HEADER)
        timestamp_raw = headers.get(TIMESTAMP_HEADER)
        signature_header = headers.get(SIGNATURE_HEADER)
        if not event_id or not timestamp_raw or not signature_header:
            raise MissingSignature("webhook-id, webhook-timestamp and webhook-signature are required")
        # isdigit() alone admits digits int() rejects, such as "²".
        if not (timestamp_raw.isascii() and timestamp_raw.isdigit()):
            raise MalformedSignature("webhook-timestamp is not a unix timestamp")
        if len(event_id) > 255 or "\x00" in event_id:
            raise MalformedSignature("webhook-id is too long or holds a NUL character")
        timestamp = int(timestamp_raw)
        signatures = _signatures_parse(signature_header)
        signed = f"{event_id}.{timestamp}.".encode() + body
        if not any(_matches(key, version, sig, signed) for key in keys for version, sig in signatures):
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

    def sign(self, *, secret, body, timestamp, event_id):
        signed = f"{event_id}.{timestamp}.".encode() + body
        if secret.startswith(PRIVATE_KEY_PREFIX):
            private = Ed25519PrivateKey.from_private_bytes(_b64decode(secret.removeprefix(PRIVATE_KEY_PREFIX)))
            signature = "v1a," + base64.b64encode(private.sign(signed)).decode()
        else:
            key = _b64decode(secret.removeprefix(SECRET_PREFIX))
            signature = "v1," + base64.b64encode(hmac_sha256(key, signed)).decode()
        return {ID_HEADER: event_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}


scheme = StandardWebhooksScheme()
