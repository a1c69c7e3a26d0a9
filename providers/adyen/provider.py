"""Adyen standard notifications, JSON: `{"live": "true"|"false", "notificationItems": [{"NotificationRequestItem": {...}}]}`.

There is no signature header: every item carries `additionalData.hmacSignature`, the base64
HMAC-SHA256 of `pspReference:originalReference:merchantAccountCode:merchantReference:amount.value:
amount.currency:eventCode:success` (absent fields empty), keyed by the hex-decoded HMAC key the
Customer Area shows. The body must be parsed to find the signatures, so the strict parser runs
first; nothing is stored unless every item verifies. Each item is stored as its own event under
`<eventCode>:<pspReference>:<success>` (Adyen has no event id; that triple is what its docs say
identifies a notification). There is no signed timestamp, so no tolerance check: a replayed item is a
duplicate of the stored one.
"""

import base64
import binascii
import json
import string

from django.views.decorators.debug import sensitive_variables

from providers.adyen.facts import (
    adyen_facts,
    event_date_parse,
    item_find,
    item_key,
    notification_items,
)
from providers.adyen.samples import adyen_sample
from providers.base import (
    MAX_EVENT_ID_LENGTH,
    MAX_SIGNATURE_ENTRIES,
    Scheme,
    SigningKey,
    VerifiedDelivery,
    any_mac_matches,
    hmac_sha256,
    json_object_parse,
)
from providers.exceptions import (
    InvalidPayload,
    InvalidSecret,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
)

HMAC_KEY_HEX_LENGTH = 64  # the Customer Area's HMAC key: 32 bytes in hex
# Adyen's JSON notifications carry one item; the bound is the same as for header signature entries,
# because each item is one signature to check (one HMAC per key).
MAX_NOTIFICATION_ITEMS = MAX_SIGNATURE_ENTRIES
# base64 of 32 bytes is 44 characters; longer values are not decoded.
MAX_SIGNATURE_CHARS = 44
SIGNED_FIELDS = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference")


def _signed_value(value, *, name: str) -> str:
    # Adyen sends strings, and amount.value as an integer. Anything else (a float, a boolean, a list)
    # has no agreed text form, so it is refused rather than rendered one way and signed another.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MalformedSignature(f"a notification item's {name} is not a string")


def signed_string(item: dict) -> bytes:
    """The text Adyen signs for one NotificationRequestItem (its HMAC signature calculation)."""
    amount = item.get("amount")
    if amount is None:
        amount = {}
    if not isinstance(amount, dict):
        raise MalformedSignature("a notification item's amount is not an object")
    values = [_signed_value(item.get(name), name=name) for name in SIGNED_FIELDS]
    values += [
        _signed_value(amount.get("value"), name="amount.value"),
        _signed_value(amount.get("currency"), name="amount.currency"),
        _signed_value(item.get("eventCode"), name="eventCode"),
        _signed_value(item.get("success"), name="success"),
    ]
    return ":".join(values).encode()


def _signature_get(item: dict) -> bytes:
    additional = item.get("additionalData")
    if additional is None or (isinstance(additional, dict) and additional.get("hmacSignature") in (None, "")):
        raise MissingSignature("a notification item has no additionalData.hmacSignature")
    if not isinstance(additional, dict) or not isinstance(additional["hmacSignature"], str):
        raise MalformedSignature("a notification item's additionalData.hmacSignature is not a string")
    value = additional["hmacSignature"]
    if len(value) > MAX_SIGNATURE_CHARS:
        raise MalformedSignature("a notification item's hmacSignature is too long")
    try:
        signature = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedSignature("a notification item's hmacSignature is not base64") from None
    if len(signature) != 32:
        raise MalformedSignature("a notification item's hmacSignature is not an HMAC-SHA256")
    return signature


def _items_get(payload: dict) -> list[dict]:
    wrappers = payload.get("notificationItems")
    if wrappers is None or wrappers == []:
        raise MissingSignature("the body has no notificationItems")
    if not isinstance(wrappers, list):
        raise MalformedSignature("notificationItems is not a list")
    if len(wrappers) > MAX_NOTIFICATION_ITEMS:
        raise MalformedSignature("the body has too many notification items")
    items = notification_items(payload)
    if len(items) != len(wrappers):
        raise MalformedSignature("a notification item is not a NotificationRequestItem object")
    return items


def _delivery(item: dict) -> VerifiedDelivery:
    psp, event_code, success = item.get("pspReference"), item.get("eventCode"), item.get("success")
    if not all(isinstance(value, str) and value for value in (psp, event_code, success)):
        raise InvalidPayload("a notification item lacks pspReference, eventCode or success")
    event_id = item_key(item)
    if len(event_id) > MAX_EVENT_ID_LENGTH or "\x00" in event_id:
        raise InvalidPayload("a notification item's id is too long or holds a NUL character")
    return VerifiedDelivery(
        provider_event_id=event_id,
        event_type=event_code[:128],
        payload=item,
        provider_created_at=event_date_parse(item.get("eventDate")),
        used_headers={},
    )


class AdyenScheme(Scheme):
    name = "adyen"
    accepted_answer = b"[accepted]"

    def secret_parse(self, secret: str) -> SigningKey:
        if len(secret) != HMAC_KEY_HEX_LENGTH or not all(c in string.hexdigits for c in secret):
            raise InvalidSecret("an Adyen HMAC key is the 64 hexadecimal characters the Customer Area shows")
        return SigningKey(kind="hmac", material=bytes.fromhex(secret))

    @sensitive_variables()  # every local: the keys, the body and its signatures
    def verify_all(self, *, headers, body, keys, tolerance, now):
        payload = json_object_parse(body)
        items = _items_get(payload)
        hmac_keys = [key.material for key in keys if key.kind == "hmac"]
        # Every item is read before any crypto, so a malformed one costs no HMAC; then each item's
        # MAC is computed once per key. All must verify: one bad item refuses the whole request.
        checks = [(signed_string(item), _signature_get(item)) for item in items]
        for signed, signature in checks:
            macs = [hmac_sha256(key, signed) for key in hmac_keys]
            if not any_mac_matches(macs, [signature]):
                raise InvalidSignature("a notification item's signature matches no active key")
        deliveries: dict[str, VerifiedDelivery] = {}
        for item in items:
            delivery = _delivery(item)
            seen = deliveries.get(delivery.provider_event_id)
            if seen is None:
                deliveries[delivery.provider_event_id] = delivery
            elif self.content_hash(seen.payload) != self.content_hash(item):
                # Stored one by one, the second would be a 409 after the first was kept.
                raise InvalidPayload("two notification items share an id but differ")
        return list(deliveries.values())

    def verify(self, *, headers, body, keys, tolerance, now):
        return self.verify_all(headers=headers, body=body, keys=keys, tolerance=tolerance, now=now)[0]

    def content_hash(self, payload):
        # The item minus its signature: a redelivery signed after a key change is the same content.
        additional = payload.get("additionalData")
        if isinstance(additional, dict) and "hmacSignature" in additional:
            payload = {**payload, "additionalData": {k: v for k, v in additional.items() if k != "hmacSignature"}}
        return super().content_hash(payload)

    def facts(self, payload, *, provider_event_id=""):
        item = item_find(payload, provider_event_id)
        return adyen_facts(item) if item is not None else []

    def mode_mismatch(self, payload, *, mode):
        # Adyen sends the strings "true" and "false". A live endpoint fulfils only what says exactly
        # "true": anything else (missing, null, a boolean, "FALSE") is stored and ignored, never
        # fulfilled. A test endpoint ignores only what says it is live.
        is_live = payload.get("live") == "true"
        return not is_live if mode == "live" else is_live

    def sample(self, event_type, *, mode):
        notification = adyen_sample(event_type, live=mode == "live")
        item = notification["notificationItems"][0]["NotificationRequestItem"]
        return json.dumps(notification).encode(), item_key(item)

    @sensitive_variables("secret")
    def sign(self, *, secret, body, timestamp, event_id):
        """Adyen sends no signature header: the signatures are inside the body (see body_sign)."""
        return {}

    @sensitive_variables("secret", "body")
    def signed_request(self, *, secret, body, timestamp, event_id):
        return self.body_sign(secret=secret, body=body), {}

    @sensitive_variables()  # every local: the secret, the key and the body
    def body_sign(self, *, secret: str, body: bytes) -> bytes:
        """The body with every item's additionalData.hmacSignature set under `secret` (a hex HMAC key),
        as Adyen sends it; the signer of send_test_webhook, the tests and the benchmarks."""
        key = self.secret_parse(secret).material
        payload = json.loads(body)
        for item in notification_items(payload):
            signature = base64.b64encode(hmac_sha256(key, signed_string(item))).decode()
            item.setdefault("additionalData", {})["hmacSignature"] = signature
        return json.dumps(payload).encode()


scheme = AdyenScheme()
