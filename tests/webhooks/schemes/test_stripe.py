"""Unit tests of the Stripe scheme's verify(), with the official `stripe` package as independent signer."""

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
import stripe
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from providers import scheme_get
from providers.stripe import samples
from webhooks.exceptions import InvalidPayload, InvalidSignature, MalformedSignature, MissingSignature, TimestampOutOfTolerance

SECRET = "whsec_" + "5f" * 16
OTHER_SECRET = "whsec_" + "a1" * 16
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
TOLERANCE = 300

scheme = scheme_get("stripe")


def _event_body(event_type: str = "invoice.paid", **fields) -> str:
    event = samples.stripe_event(event_type, created=NOW - 5)
    event.update(fields)
    return json.dumps(event)


def _verify(header: str | None, body: bytes, *, secrets=(SECRET,), now: float = NOW):
    headers = {} if header is None else {"Stripe-Signature": header}
    keys = [scheme.secret_parse(secret) for secret in secrets]
    return scheme.verify(headers=headers, body=body, keys=keys, tolerance=TOLERANCE, now=now)


def _hex_signature(secret: str, timestamp, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_a_delivery_signed_by_the_official_stripe_library_verifies():
    payload = _event_body("checkout.session.completed")
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    delivery = _verify(header, payload.encode())

    event = json.loads(payload)
    assert delivery.provider_event_id == event["id"]
    assert delivery.event_type == "checkout.session.completed"
    assert delivery.payload == event
    assert delivery.provider_created_at == datetime.fromtimestamp(NOW - 5, UTC)
    assert delivery.used_headers == {"Stripe-Signature": header}


def test_a_header_with_several_v1_signatures_verifies_when_one_of_them_matches():
    body = _event_body().encode()
    header = f"t={NOW},v1={_hex_signature(OTHER_SECRET, NOW, body)},v1={_hex_signature(SECRET, NOW, body)},v0={'00' * 32}"

    assert _verify(header, body).provider_event_id == json.loads(body)["id"]


def test_an_unreadable_v1_value_does_not_hide_a_valid_one_beside_it():
    body = _event_body().encode()
    header = f"t={NOW},v1=not-hex,v1={_hex_signature(SECRET, NOW, body)}"

    assert _verify(header, body).event_type == "invoice.paid"


def test_any_of_the_endpoints_active_secrets_may_match():
    payload = _event_body()
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    assert _verify(header, payload.encode(), secrets=(OTHER_SECRET, SECRET)).event_type == "invoice.paid"


def test_a_signature_made_with_another_secret_is_invalid():
    payload = _event_body()
    header = stripe.WebhookSignature.generate_signature_header(payload, OTHER_SECRET, NOW)

    with pytest.raises(InvalidSignature):
        _verify(header, payload.encode())


def test_a_tampered_body_is_an_invalid_signature():
    payload = _event_body()
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)
    tampered = payload.replace('"livemode": false', '"livemode": true')
    assert tampered != payload

    with pytest.raises(InvalidSignature):
        _verify(header, tampered.encode())


def test_a_signature_moved_to_another_timestamp_is_invalid():
    payload = _event_body()
    signature = _hex_signature(SECRET, NOW, payload.encode())

    with pytest.raises(InvalidSignature):
        _verify(f"t={NOW - 1},v1={signature}", payload.encode())


@pytest.mark.parametrize("offset", [-TOLERANCE, 0, TOLERANCE])
def test_a_timestamp_within_the_tolerance_either_way_verifies(offset):
    payload = _event_body()
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    assert _verify(header, payload.encode(), now=NOW + offset).provider_event_id


@pytest.mark.parametrize("offset", [TOLERANCE + 1, 86_400], ids=["just-too-old", "a-day-old"])
def test_an_old_timestamp_is_out_of_tolerance(offset):
    payload = _event_body()
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    with pytest.raises(TimestampOutOfTolerance):
        _verify(header, payload.encode(), now=NOW + offset)


@pytest.mark.parametrize("offset", [TOLERANCE + 1, 86_400], ids=["just-too-new", "a-day-ahead"])
def test_a_future_timestamp_is_out_of_tolerance(offset):
    payload = _event_body()
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    with pytest.raises(TimestampOutOfTolerance):
        _verify(header, payload.encode(), now=NOW - offset)


@pytest.mark.parametrize("header", [None, ""], ids=["absent", "empty"])
def test_a_missing_stripe_signature_header_is_missing_signature(header):
    with pytest.raises(MissingSignature):
        _verify(header, _event_body().encode())


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=1767225600",
        f"v1={'ab' * 32}",
        f"t=abc,v1={'ab' * 32}",
        f"t=1767225600.5,v1={'ab' * 32}",
        f"t=,v1={'ab' * 32}",
        f"t=-1767225600,v1={'ab' * 32}",
        f"t=\N{SUPERSCRIPT TWO},v1={'ab' * 32}",
        "t=1767225600,v1=not-hex",
        f"t=1767225600,v0={'ab' * 32}",
    ],
    ids=[
        "garbage", "no-v1", "no-t", "t-not-a-number", "t-fractional", "t-empty", "t-negative",
        "t-a-non-ascii-digit", "only-an-unreadable-v1", "only-v0",
    ],
)
def test_a_malformed_stripe_signature_header_is_malformed_signature(header):
    with pytest.raises(MalformedSignature):
        _verify(header, _event_body().encode())


@pytest.mark.parametrize("body", [b"not json at all", b"\xff\xfe\x00", b'["a", "list"]', b'"a string"', b"42", b"null"])
def test_a_verified_body_that_is_not_a_json_object_is_an_invalid_payload(body):
    header = f"t={NOW},v1={_hex_signature(SECRET, NOW, body)}"

    with pytest.raises(InvalidPayload):
        _verify(header, body)


def test_the_body_is_not_parsed_before_its_signature_verifies():
    body = b"not json at all"

    with pytest.raises(InvalidSignature):
        _verify(f"t={NOW},v1={_hex_signature(OTHER_SECRET, NOW, body)}", body)


@pytest.mark.parametrize(
    "event_id", [None, "", 12345, "evt_" + "x" * 300, "evt_\x00nul"], ids=["absent", "empty", "not-a-string", "too-long", "nul"]
)
def test_a_verified_stripe_payload_without_a_usable_event_id_is_an_invalid_payload(event_id):
    event = json.loads(_event_body())
    if event_id is None:
        del event["id"]
    else:
        event["id"] = event_id
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    with pytest.raises(InvalidPayload):
        _verify(header, payload.encode())


@pytest.mark.parametrize("created", [10**20, -(10**20), 1.5e300, True, "yesterday"])
def test_an_unusable_created_time_does_not_stop_a_verified_event(created):
    payload = _event_body(created=created)
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    delivery = _verify(header, payload.encode())

    assert delivery.provider_created_at is None


def test_a_nul_character_in_the_event_type_is_dropped_so_the_event_can_be_stored():
    payload = _event_body(type="invoice.paid\x00")
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, NOW)

    assert _verify(header, payload.encode()).event_type == "invoice.paid"


def test_our_signature_verifies_with_the_official_stripe_verifier():
    payload = _event_body()
    timestamp = int(datetime.now(UTC).timestamp())

    headers = scheme.sign(secret=SECRET, body=payload.encode(), timestamp=timestamp, event_id=json.loads(payload)["id"])

    assert stripe.WebhookSignature.verify_header(payload, headers["Stripe-Signature"], SECRET, tolerance=TOLERANCE)


def test_our_signature_fails_the_official_verifier_under_another_secret():
    payload = _event_body()
    headers = scheme.sign(secret=SECRET, body=payload.encode(), timestamp=int(datetime.now(UTC).timestamp()), event_id="")

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload, headers["Stripe-Signature"], OTHER_SECRET, tolerance=TOLERANCE)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_stripe_like_bodies = st.fixed_dictionaries(
    {}, optional={"id": _json_values, "type": _json_values, "created": _json_values, "pending_webhooks": _json_values}
).map(lambda event: json.dumps(event).encode())


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2048) | _stripe_like_bodies)
def test_any_correctly_signed_body_verifies_or_is_an_invalid_payload(body):
    header = f"t={NOW},v1={_hex_signature(SECRET, NOW, body)}"

    try:
        delivery = _verify(header, body)
    except InvalidPayload:
        return
    assert isinstance(delivery.provider_event_id, str) and 0 < len(delivery.provider_event_id) <= 255
    assert delivery.used_headers == {"Stripe-Signature": header}


@hypothesis_settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_of_a_signed_body_is_an_invalid_signature(data):
    body = _event_body("customer.subscription.updated").encode()
    header = f"t={NOW},v1={_hex_signature(SECRET, NOW, body)}"
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    replacement = data.draw(st.integers(min_value=0, max_value=255).filter(lambda value: value != body[position]))
    changed = body[:position] + bytes([replacement]) + body[position + 1 :]

    with pytest.raises(InvalidSignature):
        _verify(header, changed)
