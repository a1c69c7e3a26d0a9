"""Unit tests of the Paddle scheme's verify() and sign(), with Paddle's official SDK
(`paddle-python-sdk`, module `paddle_billing`) as the independent signer and verifier."""

import json
import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from paddle_billing.Notifications import PaddleSignature, Secret

from canonical.envelope import canonical_events_build
from providers import base as providers_base
from providers import scheme_get
from providers.base import MAX_SIGNATURE_ENTRIES, SigningKey
from providers.exceptions import (
    InvalidPayload,
    InvalidSecret,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    TimestampOutOfTolerance,
)
from providers.paddle import facts as facts_module
from providers.paddle import samples

# The secret of the SDK's own tests (a real-looking notification destination secret).
SECRET = "pdl_ntfset_01hs0t3tw21j988db1pam5xg8m_GrOWLNef+vmtjJYq4mSnHNzvc8uWoJ1I"
OTHER_SECRET = "pdl_ntfset_01hs0t3tw21j988db1pam5xg8m_0therSecretN0tTheOneThatSigned1"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
TOLERANCE = 300

scheme = scheme_get("paddle")


def _body(sample: str = "transaction.completed", **fields) -> bytes:
    event = samples.paddle_trigger_event(sample)
    event.update(fields)
    return json.dumps(event).encode()


def _sdk_header(secret: str, timestamp: int, body: bytes, *, extra_h1: tuple[str, ...] = ()) -> str:
    """The header as Paddle sends it, the HMAC computed by the official SDK."""
    h1 = PaddleSignature.calculate_hmac(secret, f"{timestamp}:".encode() + body).hexdigest()
    return ";".join([f"ts={timestamp}", *(f"h1={value}" for value in extra_h1), f"h1={h1}"])


def _verify(header: str | None, body: bytes, *, secrets=(SECRET,), now: float = NOW):
    headers = {} if header is None else {"Paddle-Signature": header}
    keys = [scheme.secret_parse(secret) for secret in secrets]
    return scheme.verify(headers=headers, body=body, keys=keys, tolerance=TOLERANCE, now=now)


# --- Valid deliveries --------------------------------------------------------------------------------


def test_a_delivery_signed_by_the_official_sdk_verifies():
    body = _body(occurred_at="2025-12-31T23:59:55.123456789Z")
    header = _sdk_header(SECRET, NOW, body)

    delivery = _verify(header, body)

    event = json.loads(body)
    assert delivery.provider_event_id == event["event_id"]
    assert delivery.event_type == "transaction.completed"
    assert delivery.payload == event
    assert delivery.provider_created_at.isoformat() == "2025-12-31T23:59:55.123456+00:00"
    assert delivery.used_headers == {"Paddle-Signature": header}


def test_the_sdks_published_vector_verifies_and_then_fails_as_a_payload_not_as_a_signature():
    # tests/Unit/Notification/test_Verifier.py in paddle-python-sdk: body "hello-world", three
    # secrets of which the third signed, and an unreadable h1 ("dummy") before the right one.
    header = "ts=1696195954;h1=dummy;h1=d96299976a6eb066f484d7fde011ac56fc32b38fc9940bc419d6e537fdc6ef02"
    keys = [
        SigningKey(kind="hmac", material=b"pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_TjIG2BXbm83HPXqNfziwe506sBEdqL/4"),
        SigningKey(kind="hmac", material=b"pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh"),
    ]

    with pytest.raises(InvalidPayload):  # verified, but "hello-world" is not a JSON object
        scheme.verify(headers={"Paddle-Signature": header}, body=b"hello-world", keys=keys, tolerance=300, now=1696195954)
    with pytest.raises(InvalidSignature):
        scheme.verify(headers={"Paddle-Signature": header}, body=b"hello-world", keys=keys[:1], tolerance=300, now=1696195954)


def test_during_rotation_a_header_with_two_h1_verifies_under_either_secret():
    body = _body()
    old = PaddleSignature.calculate_hmac(OTHER_SECRET, f"{NOW}:".encode() + body).hexdigest()
    header = _sdk_header(SECRET, NOW, body, extra_h1=(old,))

    assert _verify(header, body, secrets=(SECRET,)).event_type == "transaction.completed"
    assert _verify(header, body, secrets=(OTHER_SECRET,)).event_type == "transaction.completed"


def test_any_of_the_endpoints_active_secrets_may_match():
    body = _body()

    assert _verify(_sdk_header(SECRET, NOW, body), body, secrets=(OTHER_SECRET, SECRET)).provider_event_id


def test_our_signature_verifies_with_the_official_sdk():
    body = _body()
    headers = scheme.sign(secret=SECRET, body=body, timestamp=NOW, event_id=json.loads(body)["event_id"])

    assert PaddleSignature().verify(headers["Paddle-Signature"], body.decode(), Secret(SECRET)) is True
    assert headers["Paddle-Signature"] == _sdk_header(SECRET, NOW, body)


def test_our_signature_fails_the_official_sdk_under_another_secret():
    body = _body()
    headers = scheme.sign(secret=SECRET, body=body, timestamp=NOW, event_id="")

    assert PaddleSignature().verify(headers["Paddle-Signature"], body.decode(), Secret(OTHER_SECRET)) is False


# --- Refusals ----------------------------------------------------------------------------------------


def test_a_signature_made_with_another_secret_is_invalid():
    body = _body()

    with pytest.raises(InvalidSignature):
        _verify(_sdk_header(OTHER_SECRET, NOW, body), body)


def test_a_tampered_body_is_an_invalid_signature():
    body = _body()
    header = _sdk_header(SECRET, NOW, body)
    tampered = body.replace(b'"total": "32662"', b'"total": "1"')
    assert tampered != body

    with pytest.raises(InvalidSignature):
        _verify(header, tampered)


def test_a_signature_moved_to_another_timestamp_is_invalid():
    body = _body()
    h1 = _sdk_header(SECRET, NOW, body).split(";h1=")[1]

    with pytest.raises(InvalidSignature):
        _verify(f"ts={NOW - 1};h1={h1}", body)


def test_a_stripe_style_signature_over_ts_dot_body_is_invalid():
    body = _body()
    h1 = PaddleSignature.calculate_hmac(SECRET, f"{NOW}.".encode() + body).hexdigest()

    with pytest.raises(InvalidSignature):
        _verify(f"ts={NOW};h1={h1}", body)


@pytest.mark.parametrize("offset", [-TOLERANCE, 0, TOLERANCE])
def test_a_timestamp_within_the_tolerance_either_way_verifies(offset):
    body = _body()

    assert _verify(_sdk_header(SECRET, NOW, body), body, now=NOW + offset).provider_event_id


@pytest.mark.parametrize("offset", [TOLERANCE + 1, 86_400, -(TOLERANCE + 1), -86_400],
                         ids=["just-too-old", "a-day-old", "just-too-new", "a-day-ahead"])
def test_a_timestamp_outside_the_tolerance_is_refused(offset):
    body = _body()

    with pytest.raises(TimestampOutOfTolerance):
        _verify(_sdk_header(SECRET, NOW, body), body, now=NOW + offset)


@pytest.mark.parametrize("header", [None, ""], ids=["absent", "empty"])
def test_a_missing_paddle_signature_header_is_missing_signature(header):
    with pytest.raises(MissingSignature):
        _verify(header, _body())


def test_a_stripe_signature_header_is_not_a_paddle_one():
    body = _body()
    with pytest.raises(MissingSignature):
        scheme.verify(headers={"Stripe-Signature": f"t={NOW},v1={'ab' * 32}"}, body=body,
                      keys=[scheme.secret_parse(SECRET)], tolerance=TOLERANCE, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "ts=1767225600",
        f"h1={'ab' * 32}",
        f"ts=abc;h1={'ab' * 32}",
        f"ts=1767225600.5;h1={'ab' * 32}",
        f"ts=;h1={'ab' * 32}",
        f"ts=-1767225600;h1={'ab' * 32}",
        f"ts=\N{SUPERSCRIPT TWO};h1={'ab' * 32}",
        f"ts={'1' * 13};h1={'ab' * 32}",
        f"ts={'1' * 5000};h1={'ab' * 32}",
        f"ts=1767225600;ts=1767225600;h1={'ab' * 32}",
        "ts=1767225600;h1=not-hex",
        "ts=1767225600;h1=",
        f"ts=1767225600;h2={'ab' * 32}",
        f"t=1767225600,v1={'ab' * 32}",
    ],
    ids=[
        "garbage", "no-h1", "no-ts", "ts-not-a-number", "ts-fractional", "ts-empty", "ts-negative",
        "ts-a-non-ascii-digit", "ts-13-digits", "ts-thousands-of-digits", "two-ts", "only-an-unreadable-h1",
        "empty-h1", "only-an-unknown-algorithm", "stripe-shaped",
    ],
)
def test_a_malformed_paddle_signature_header_is_malformed_signature(header):
    with pytest.raises(MalformedSignature):
        _verify(header, _body())


def test_hundreds_of_entries_are_malformed_before_any_crypto(monkeypatch):
    calls = []
    monkeypatch.setattr(providers_base, "hmac_sha256", lambda key, message: calls.append(1))
    header = f"ts={NOW};" + ";".join(f"h1={i:064x}" for i in range(500))

    with pytest.raises(MalformedSignature):
        _verify(header, _body())
    assert calls == []


def test_a_header_of_a_megabyte_is_refused_quickly():
    header = f"ts={NOW};h1=" + "a" * 1_000_000
    started = time.perf_counter()

    with pytest.raises(MalformedSignature):
        _verify(header, _body())
    assert time.perf_counter() - started < 0.5


def test_one_mac_per_key_whatever_the_number_of_entries(monkeypatch):
    calls = []
    real = providers_base.hmac_sha256
    monkeypatch.setattr(providers_base, "hmac_sha256", lambda key, message: calls.append(1) or real(key, message))
    entries = ";".join(f"h1={i:064x}" for i in range(MAX_SIGNATURE_ENTRIES))
    header = f"ts={NOW};{entries};h1=;h1=ab;h1={'ab' * 33};h1={'zz' * 32}"

    with pytest.raises(InvalidSignature):
        _verify(header, _body(), secrets=(SECRET, OTHER_SECRET))
    assert len(calls) == 2


@pytest.mark.parametrize("body", [b"not json at all", b"\xff\xfe\x00", b'["a", "list"]', b"42", b'{"a": NaN}',
                                  b'{"event_id": "evt_1", "event_id": "evt_2"}'])
def test_a_verified_body_that_is_not_a_strict_json_object_is_an_invalid_payload(body):
    with pytest.raises(InvalidPayload):
        _verify(_sdk_header(SECRET, NOW, body), body)


def test_the_body_is_not_parsed_before_its_signature_verifies():
    body = b"not json at all"

    with pytest.raises(InvalidSignature):
        _verify(_sdk_header(OTHER_SECRET, NOW, body), body)


@pytest.mark.parametrize("event_id", [None, "", 12345, "evt_" + "x" * 300, "evt_\x00nul"],
                         ids=["absent", "empty", "not-a-string", "too-long", "nul"])
def test_a_verified_payload_without_a_usable_event_id_is_an_invalid_payload(event_id):
    event = json.loads(_body())
    if event_id is None:
        del event["event_id"]
    else:
        event["event_id"] = event_id
    body = json.dumps(event).encode()

    with pytest.raises(InvalidPayload):
        _verify(_sdk_header(SECRET, NOW, body), body)


@pytest.mark.parametrize("occurred_at", [None, "yesterday", 1767225600, "2026-13-45T99:00:00Z", "9" * 100])
def test_an_unusable_occurred_at_does_not_stop_a_verified_event(occurred_at):
    body = _body(occurred_at=occurred_at)

    assert _verify(_sdk_header(SECRET, NOW, body), body).provider_created_at is None


def test_a_nul_character_in_the_event_type_is_dropped_so_the_event_can_be_stored():
    body = _body(event_type="transaction.completed\x00")

    assert _verify(_sdk_header(SECRET, NOW, body), body).event_type == "transaction.completed"


# --- Secrets and samples -------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["whsec_" + "ab" * 16, "pdl_ntfset_", "pdl_ntfset_short", "", "pdl_ntf_" + "a" * 40])
def test_a_secret_that_is_not_a_paddle_notification_secret_is_refused(secret):
    with pytest.raises(InvalidSecret):
        scheme.secret_parse(secret)


def test_the_secret_key_is_the_whole_secret_string():
    assert scheme.secret_parse(SECRET).material == SECRET.encode()


def test_a_redelivery_with_another_notification_id_has_the_same_content():
    event = json.loads(_body())
    replayed = {**event, "notification_id": samples.paddle_id("ntf_")}

    assert scheme.content_hash(event) == scheme.content_hash(replayed)
    assert scheme.content_hash(event) != scheme.content_hash({**event, "data": {**event["data"], "id": "txn_other"}})


def test_sample_names_the_known_types_for_an_unknown_one():
    with pytest.raises(KeyError, match="transaction.completed"):
        scheme.sample("transaction.nonsense", mode="live")


def test_each_sample_has_a_fresh_paddle_shaped_event_id():
    (body_1, id_1), (body_2, id_2) = scheme.sample("transaction.completed", mode="live"), scheme.sample("transaction.completed", mode="test")

    assert id_1 != id_2 and id_1.startswith("evt_") and len(id_1) == 30
    assert json.loads(body_1)["event_id"] == id_1 and json.loads(body_2)["event_id"] == id_2


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_paddle_like_bodies = st.fixed_dictionaries(
    {}, optional={"event_id": _json_values, "event_type": _json_values, "occurred_at": _json_values, "data": _json_values}
).map(lambda event: json.dumps(event).encode())


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2048) | _paddle_like_bodies)
def test_any_correctly_signed_body_verifies_or_is_an_invalid_payload_and_its_facts_never_raise(body):
    header = _sdk_header(SECRET, NOW, body)

    try:
        delivery = _verify(header, body)
    except InvalidPayload:
        return
    assert isinstance(delivery.provider_event_id, str) and 0 < len(delivery.provider_event_id) <= 255
    assert scheme.facts(delivery.payload) == [] or delivery.payload.get("event_type") in facts_module.HANDLERS


@hypothesis_settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_of_a_signed_body_is_an_invalid_signature(data):
    body = _body("subscription.updated")
    header = _sdk_header(SECRET, NOW, body)
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    replacement = data.draw(st.integers(min_value=0, max_value=255).filter(lambda value: value != body[position]))

    with pytest.raises(InvalidSignature):
        _verify(header, body[:position] + bytes([replacement]) + body[position + 1 :])


@hypothesis_settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["id", "items", "custom_data", "customer_id", "details", "status", "subscription_id",
                                             "billing_period", "current_billing_period", "currency_code", "action",
                                             "transaction_id", "totals", "type", "origin", "reason"]), _json_values),
       event_type=st.sampled_from(sorted(facts_module.HANDLERS)))
def test_the_facts_of_any_shaped_payload_build_valid_canonical_events_or_none(data, event_type):
    data.setdefault("id", "txn_01hv8wptq8987qeep44cyrewp9")
    event = {"event_id": "evt_1", "event_type": event_type, "occurred_at": "2026-01-01T00:00:00Z", "data": data}

    canonical_events_build(scheme.facts(event), idempotency_key="k", source="/webhooks/x", correlation_id="c")
