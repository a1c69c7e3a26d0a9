"""Unit tests of the Standard Webhooks scheme's verify(), with `standardwebhooks` and `cryptography` as signers."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from providers import scheme_get
from providers.standard import samples as standard_samples
from providers.stripe import samples
from webhooks.exceptions import InvalidPayload, InvalidSignature, MalformedSignature, MissingSignature, TimestampOutOfTolerance

SECRET_BYTES = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"payhook test key").digest())
PUBLIC_KEY = "whpk_" + base64.b64encode(PRIVATE_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
PRIVATE_KEY_SECRET = "whsk_" + base64.b64encode(
    PRIVATE_KEY.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
).decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
TOLERANCE = 300

scheme = scheme_get("standard")


def _payload(event_type: str = "invoice.paid") -> str:
    """A Standard Webhooks envelope carrying Stripe's published invoice object."""
    return json.dumps(standard_samples.standard_event(event_type, samples.stripe_object("invoice")))


def _official_signature(payload: str, *, secret: str = SECRET, msg_id: str = MSG_ID, timestamp: int = NOW) -> str:
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), payload)


def _hmac_entry(body: bytes, *, key: bytes = SECRET_BYTES, msg_id: str = MSG_ID, timestamp: int = NOW) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _ed25519_entry(body: bytes, *, private=PRIVATE_KEY, msg_id: str = MSG_ID, timestamp: int = NOW) -> str:
    return "v1a," + base64.b64encode(private.sign(f"{msg_id}.{timestamp}.".encode() + body)).decode()


def _headers(signature: str, *, msg_id: str = MSG_ID, timestamp=NOW) -> dict:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def _verify(headers: dict, body: bytes, *, secrets=(SECRET,), now: float = NOW):
    keys = [scheme.secret_parse(secret) for secret in secrets]
    return scheme.verify(headers=headers, body=body, keys=keys, tolerance=TOLERANCE, now=now)


def test_a_delivery_signed_by_the_official_standardwebhooks_library_verifies():
    payload = _payload("customer.subscription.created")
    headers = _headers(_official_signature(payload))

    delivery = _verify(headers, payload.encode())

    assert delivery.provider_event_id == MSG_ID
    assert delivery.event_type == "customer.subscription.created"
    assert delivery.payload == json.loads(payload)
    assert delivery.provider_created_at == datetime.fromtimestamp(NOW, UTC)
    assert delivery.used_headers == headers


def test_an_ed25519_v1a_signature_verifies_against_the_endpoints_public_key():
    body = _payload().encode()

    delivery = _verify(_headers(_ed25519_entry(body)), body, secrets=(PUBLIC_KEY,))

    assert delivery.provider_event_id == MSG_ID


def test_several_signature_entries_verify_when_one_of_them_matches():
    payload = _payload()
    body = payload.encode()
    other_private = Ed25519PrivateKey.generate()
    signature = " ".join(
        [
            _official_signature(payload, secret=OTHER_SECRET),
            _ed25519_entry(body, private=other_private),
            "v2,c29tZXRoaW5nIGVsc2U=",
            _official_signature(payload),
        ]
    )

    assert _verify(_headers(signature), body).provider_event_id == MSG_ID


def test_a_valid_v1a_entry_among_invalid_v1_entries_verifies():
    payload = _payload()
    body = payload.encode()
    signature = f"{_official_signature(payload, secret=OTHER_SECRET)} {_ed25519_entry(body)}"

    assert _verify(_headers(signature), body, secrets=(SECRET, PUBLIC_KEY)).provider_event_id == MSG_ID


def test_an_hmac_signature_does_not_verify_against_a_public_key():
    payload = _payload()

    with pytest.raises(InvalidSignature):
        _verify(_headers(_official_signature(payload)), payload.encode(), secrets=(PUBLIC_KEY,))


def test_an_ed25519_signature_does_not_verify_against_an_hmac_secret():
    body = _payload().encode()

    with pytest.raises(InvalidSignature):
        _verify(_headers(_ed25519_entry(body)), body, secrets=(SECRET,))


def test_any_of_the_endpoints_active_secrets_may_match():
    payload = _payload()

    delivery = _verify(_headers(_official_signature(payload)), payload.encode(), secrets=(OTHER_SECRET, PUBLIC_KEY, SECRET))

    assert delivery.provider_event_id == MSG_ID


def test_a_signature_made_with_another_secret_is_invalid():
    payload = _payload()

    with pytest.raises(InvalidSignature):
        _verify(_headers(_official_signature(payload, secret=OTHER_SECRET)), payload.encode())


def test_a_tampered_body_is_an_invalid_signature():
    payload = _payload()
    tampered = payload.replace('"status": "draft"', '"status": "paid"')
    assert tampered != payload

    with pytest.raises(InvalidSignature):
        _verify(_headers(_official_signature(payload)), tampered.encode())


def test_a_signature_moved_to_another_message_id_is_invalid():
    payload = _payload()

    with pytest.raises(InvalidSignature):
        _verify(_headers(_official_signature(payload), msg_id="msg_another"), payload.encode())


def test_a_signature_moved_to_another_timestamp_is_invalid():
    payload = _payload()

    with pytest.raises(InvalidSignature):
        _verify(_headers(_official_signature(payload), timestamp=NOW + 1), payload.encode(), now=NOW)


@pytest.mark.parametrize("offset", [-TOLERANCE, 0, TOLERANCE])
def test_a_timestamp_within_the_tolerance_either_way_verifies(offset):
    payload = _payload()

    assert _verify(_headers(_official_signature(payload)), payload.encode(), now=NOW + offset).provider_event_id


@pytest.mark.parametrize("offset", [TOLERANCE + 1, 86_400], ids=["just-too-old", "a-day-old"])
def test_an_old_timestamp_is_out_of_tolerance(offset):
    payload = _payload()

    with pytest.raises(TimestampOutOfTolerance):
        _verify(_headers(_official_signature(payload)), payload.encode(), now=NOW + offset)


@pytest.mark.parametrize("offset", [TOLERANCE + 1, 86_400], ids=["just-too-new", "a-day-ahead"])
def test_a_future_timestamp_is_out_of_tolerance(offset):
    payload = _payload()

    with pytest.raises(TimestampOutOfTolerance):
        _verify(_headers(_official_signature(payload)), payload.encode(), now=NOW - offset)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_each_missing_header_is_missing_signature(header, how):
    payload = _payload()
    headers = _headers(_official_signature(payload))
    if how == "absent":
        del headers[header]
    else:
        headers[header] = ""

    with pytest.raises(MissingSignature):
        _verify(headers, payload.encode())


@pytest.mark.parametrize(
    "timestamp",
    ["yesterday", "1767225600.5", "-1767225600", "+1767225600", "1767225600 ", "\N{SUPERSCRIPT TWO}", "0x10"],
    ids=["words", "fractional", "negative", "plus-sign", "trailing-space", "a-non-ascii-digit", "hex"],
)
def test_a_malformed_webhook_timestamp_is_malformed_signature(timestamp):
    payload = _payload()

    with pytest.raises(MalformedSignature):
        _verify(_headers(_official_signature(payload), timestamp=timestamp), payload.encode())


@pytest.mark.parametrize(
    "signature",
    ["garbage", "v1", "v1,!!!not-base64!!!", "   "],
    ids=["garbage", "version-only", "not-base64", "only-spaces"],
)
def test_a_malformed_webhook_signature_is_malformed_signature(signature):
    payload = _payload()
    headers = _headers(signature)

    with pytest.raises(MalformedSignature):
        _verify(headers, payload.encode())


@pytest.mark.parametrize("msg_id", ["msg_" + "x" * 300, "msg_\x00nul"], ids=["too-long", "nul"])
def test_an_unstorable_webhook_id_is_malformed_signature(msg_id):
    payload = _payload()

    with pytest.raises(MalformedSignature):
        _verify(_headers(_official_signature(payload, msg_id=msg_id), msg_id=msg_id), payload.encode())


@pytest.mark.parametrize("body", [b"not json at all", b"\xff\xfe\x00", b'["a", "list"]', b'"a string"', b"42", b"null"])
def test_a_verified_body_that_is_not_a_json_object_is_an_invalid_payload(body):
    with pytest.raises(InvalidPayload):
        _verify(_headers(_hmac_entry(body)), body)


def test_the_body_is_not_parsed_before_its_signature_verifies():
    body = b"not json at all"

    with pytest.raises(InvalidSignature):
        _verify(_headers(_hmac_entry(body, key=b"k" * 32)), body)


def test_the_event_id_is_the_webhook_id_header_not_a_payload_field():
    event = json.loads(_payload())
    event["id"] = "evt_in_the_payload"
    payload = json.dumps(event)

    assert _verify(_headers(_official_signature(payload)), payload.encode()).provider_event_id == MSG_ID


def test_our_hmac_signature_verifies_with_the_official_verifier():
    payload = _payload()
    timestamp = int(datetime.now(UTC).timestamp())

    headers = scheme.sign(secret=SECRET, body=payload.encode(), timestamp=timestamp, event_id=MSG_ID)

    assert Webhook(SECRET).verify(payload.encode(), headers) == json.loads(payload)


def test_our_hmac_signature_fails_the_official_verifier_under_another_secret():
    payload = _payload()
    headers = scheme.sign(secret=SECRET, body=payload.encode(), timestamp=int(datetime.now(UTC).timestamp()), event_id=MSG_ID)

    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(payload.encode(), headers)


def test_our_ed25519_signature_verifies_with_our_public_key_and_cryptography():
    body = _payload().encode()

    headers = scheme.sign(secret=PRIVATE_KEY_SECRET, body=body, timestamp=NOW, event_id=MSG_ID)

    version, _, signature = headers["webhook-signature"].partition(",")
    assert version == "v1a"
    PRIVATE_KEY.public_key().verify(base64.b64decode(signature), f"{MSG_ID}.{NOW}.".encode() + body)
    assert _verify(headers, body, secrets=(PUBLIC_KEY,)).provider_event_id == MSG_ID


_json_objects = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    ),
    max_size=5,
).map(lambda payload: json.dumps(payload).encode())


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2048) | _json_objects)
def test_any_correctly_signed_body_verifies_or_is_an_invalid_payload(body):
    headers = _headers(_hmac_entry(body))

    try:
        delivery = _verify(headers, body)
    except InvalidPayload:
        return
    assert delivery.provider_event_id == MSG_ID
    assert isinstance(delivery.payload, dict)


@hypothesis_settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_of_a_signed_body_is_an_invalid_signature(data):
    body = _payload("charge.refunded").encode()
    headers = _headers(f"{_hmac_entry(body)} {_ed25519_entry(body)}")
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    replacement = data.draw(st.integers(min_value=0, max_value=255).filter(lambda value: value != body[position]))
    changed = body[:position] + bytes([replacement]) + body[position + 1 :]

    with pytest.raises(InvalidSignature):
        _verify(headers, changed, secrets=(SECRET, PUBLIC_KEY))
