"""Unit tests of the Adyen scheme's verification, with Adyen's own Python library and Adyen's
published test vector as independent signers."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from Adyen.util import is_valid_hmac_notification

from providers import scheme_get
from providers.adyen import samples
from providers.adyen.provider import signed_string
from tests.providers.adyen import notifications as n
from webhooks.exceptions import (
    InvalidPayload,
    InvalidSecret,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
)

NOW = 1_767_225_600
scheme = scheme_get("adyen")


def _verify(body: bytes, *, keys=(n.KEY,)):
    return scheme.verify_all(headers={}, body=body, keys=[scheme.secret_parse(k) for k in keys], tolerance=300, now=NOW)


def _notification(*items: dict) -> bytes:
    return json.dumps(samples.adyen_notification(*items)).encode()


# --- The published test vector and Adyen's library ------------------------------------------------


def test_the_signed_string_of_the_published_example_is_adyens():
    assert signed_string(n.item("AUTHORISATION")) == n.VECTOR_SIGNED.encode()


def test_an_item_carrying_the_published_test_vector_signature_verifies_under_its_key():
    item = n.item("AUTHORISATION", additional={"hmacSignature": n.VECTOR_SIGNATURE})

    [delivery] = _verify(_notification(item), keys=(n.VECTOR_KEY,))

    assert delivery.provider_event_id == "AUTHORISATION:7914073381342284:true"
    assert delivery.event_type == "AUTHORISATION"
    assert delivery.payload == item
    assert delivery.provider_created_at == datetime(2014, 8, 6, 13, 9, 4, tzinfo=timezone(timedelta(hours=2)))
    assert delivery.used_headers == {}


def test_our_signer_agrees_with_the_published_test_vector_and_with_adyens_library():
    signed = json.loads(scheme.body_sign(secret=n.VECTOR_KEY, body=_notification(n.item("AUTHORISATION"))))
    assert signed["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["hmacSignature"] == n.VECTOR_SIGNATURE

    refund = n.item("REFUND")
    ours = json.loads(scheme.body_sign(secret=n.KEY, body=_notification(refund)))
    assert is_valid_hmac_notification(ours, n.KEY)
    assert ours["notificationItems"][0]["NotificationRequestItem"] == n.sdk_signed(refund)


def test_a_notification_signed_by_adyens_library_verifies_item_by_item():
    items = [n.item("AUTHORISATION"), n.item("REFUND"), n.item("CHARGEBACK")]

    deliveries = _verify(n.body(*items))

    assert [d.provider_event_id for d in deliveries] == [n.key_of(i) for i in items]
    assert [d.payload["pspReference"] for d in deliveries] == [i["pspReference"] for i in items]


def test_absent_fields_sign_as_empty_strings():
    item = n.item("AUTHORISATION")
    del item["merchantReference"]

    assert signed_string(item) == b"7914073381342284::TestMerchant::1130:EUR:AUTHORISATION:true"
    assert _verify(n.body(item))[0].event_type == "AUTHORISATION"


# --- Refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("pspReference", "7914073381342285"),
    ("success", "false"),
    ("eventCode", "REFUND"),
    ("merchantReference", "TestPayment-other"),
    ("amount", {"currency": "EUR", "value": 1}),
    ("originalReference", "1234567890123456"),
])
def test_a_tampered_signed_field_is_invalid(field, value):
    signed = n.sdk_signed(n.item("AUTHORISATION"))
    signed[field] = value

    with pytest.raises(InvalidSignature):
        _verify(_notification(signed))


def test_one_tampered_item_among_valid_ones_refuses_the_whole_request():
    good = [n.sdk_signed(n.item("AUTHORISATION")), n.sdk_signed(n.item("CAPTURE"))]
    bad = n.sdk_signed(n.item("REFUND"))
    bad["amount"] = {"currency": "EUR", "value": 99999}

    with pytest.raises(InvalidSignature):
        _verify(_notification(good[0], bad, good[1]))


def test_an_item_signed_with_another_key_is_invalid():
    with pytest.raises(InvalidSignature):
        _verify(n.body(n.item(), key=n.OTHER_KEY))


def test_either_of_two_active_keys_verifies_during_rotation():
    assert _verify(n.body(n.item(), key=n.OTHER_KEY), keys=(n.KEY, n.OTHER_KEY))[0].event_type == "AUTHORISATION"
    assert _verify(n.body(n.item(), key=n.KEY), keys=(n.OTHER_KEY, n.KEY))[0].event_type == "AUTHORISATION"
    # Items of one request signed before and after the roll.
    mixed = _notification(n.sdk_signed(n.item("AUTHORISATION"), n.KEY), n.sdk_signed(n.item("REFUND"), n.OTHER_KEY))
    assert len(_verify(mixed, keys=(n.KEY, n.OTHER_KEY))) == 2


def test_there_is_no_timestamp_so_an_old_event_date_is_not_refused():
    # eventDate is informative: Adyen retries for days, and the date is not signed.
    delivery = _verify(n.body(n.item(eventDate="2001-01-01T00:00:00+00:00")))[0]

    assert delivery.provider_created_at == datetime(2001, 1, 1, tzinfo=UTC)


def test_an_item_without_a_signature_is_missing_signature():
    item = n.item()
    del item["additionalData"]["hmacSignature"]
    with pytest.raises(MissingSignature):
        _verify(_notification(item))
    del item["additionalData"]
    with pytest.raises(MissingSignature):
        _verify(_notification(item))
    with pytest.raises(MissingSignature):
        _verify(_notification(n.item()))  # the example's empty hmacSignature


@pytest.mark.parametrize("payload", [{"live": "true"}, {"live": "true", "notificationItems": []}])
def test_a_notification_without_items_is_missing_signature(payload):
    with pytest.raises(MissingSignature):
        _verify(json.dumps(payload).encode())


@pytest.mark.parametrize("signature", ["not base64!", "AAAA", "A" * 10_000, 42, ["x"], base64.b64encode(b"x" * 64).decode()])
def test_an_unreadable_signature_is_malformed(signature):
    item = n.item(additional={"hmacSignature": signature})
    with pytest.raises(MalformedSignature):
        _verify(_notification(item))


@pytest.mark.parametrize("mutate", [
    lambda p: p.update(notificationItems="x"),
    lambda p: p.update(notificationItems=[{"NotificationRequestItem": "x"}]),
    lambda p: p.update(notificationItems=["x"]),
    lambda p: p["notificationItems"][0]["NotificationRequestItem"].update(success=True),
    lambda p: p["notificationItems"][0]["NotificationRequestItem"].update(amount={"value": 11.3, "currency": "EUR"}),
    lambda p: p["notificationItems"][0]["NotificationRequestItem"].update(amount="1130 EUR"),
    lambda p: p["notificationItems"][0]["NotificationRequestItem"].update(additionalData="x"),
])
def test_hostile_shapes_are_malformed_signature(mutate):
    payload = json.loads(n.body(n.item()))
    mutate(payload)
    with pytest.raises(MalformedSignature):
        _verify(json.dumps(payload).encode())


def test_hundreds_of_items_are_refused_before_any_crypto():
    signed = n.sdk_signed(n.item())
    body = _notification(*([signed] * 500))

    started = time.perf_counter()
    with pytest.raises(MalformedSignature):
        _verify(body, keys=(n.KEY,) * 30)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("body", [b"[accepted]", b"[]", b'{"live": NaN}', b'{"a": 1, "a": 2}', b"\xff"])
def test_a_body_that_is_not_a_strict_json_object_is_an_invalid_payload(body):
    with pytest.raises(InvalidPayload):
        _verify(body)


@pytest.mark.parametrize("field", ["pspReference", "eventCode"])
def test_a_verified_item_without_its_id_parts_is_an_invalid_payload(field):
    item = n.item()
    item[field] = ""
    with pytest.raises(InvalidPayload):
        _verify(n.body(item))


def test_a_verified_item_whose_id_postgresql_cannot_store_is_an_invalid_payload():
    with pytest.raises(InvalidPayload):
        _verify(n.body(n.item(pspReference="7" * 300)))
    with pytest.raises(InvalidPayload):
        _verify(n.body(n.item(pspReference="79140\x0073381342284")))


def test_the_same_item_twice_in_one_request_is_one_delivery():
    assert len(_verify(n.body(n.item(), n.item()))) == 1


def test_two_items_with_one_id_and_different_content_are_refused():
    with pytest.raises(InvalidPayload):
        _verify(n.body(n.item(), n.item(eventDate="2014-08-06T14:00:00+02:00")))


def test_an_unreadable_event_date_is_no_time_not_a_refusal():
    assert _verify(n.body(n.item(eventDate="yesterday")))[0].provider_created_at is None


def test_verify_returns_the_first_item():
    body = n.body(n.item("REFUND"), n.item("AUTHORISATION"))
    delivery = scheme.verify(headers={}, body=body, keys=[scheme.secret_parse(n.KEY)], tolerance=300, now=NOW)
    assert delivery.event_type == "REFUND"


# --- Secrets, content, mode, samples ----------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "whsec_abc", "DFB1EB54", "G" * 64, n.KEY + "00", "DF B1" + n.KEY[5:], "ＤＦ" + n.KEY[2:]])
def test_a_secret_that_is_not_a_64_hex_character_key_is_refused(secret):
    with pytest.raises(InvalidSecret):
        scheme.secret_parse(secret)


def test_a_lower_case_key_is_the_same_key():
    assert scheme.secret_parse(n.KEY.lower()).material == scheme.secret_parse(n.KEY).material == bytes.fromhex(n.KEY)


def test_a_redelivery_signed_under_a_rolled_key_has_the_same_content():
    first, again = n.sdk_signed(n.item(), n.KEY), n.sdk_signed(n.item(), n.OTHER_KEY)

    assert scheme.content_hash(first) == scheme.content_hash(again)
    assert scheme.content_hash(first) != scheme.content_hash(n.sdk_signed(n.item(reason="other")))


@pytest.mark.parametrize("live, mode, mismatch", [
    ("true", "live", False), ("false", "test", False), ("false", "live", True), ("true", "test", True),
    (None, "live", True), (True, "live", True), ("TRUE", "live", True), (None, "test", False),  # live fulfils only "true"
])
def test_the_live_flag_against_the_endpoint_mode(live, mode, mismatch):
    assert scheme.mode_mismatch({"live": live, "notificationItems": []}, mode=mode) is mismatch


def test_a_sample_is_a_fresh_unsigned_notification_of_the_endpoints_mode():
    body, event_id = scheme.sample("AUTHORISATION", mode="test")
    payload = json.loads(body)
    item = payload["notificationItems"][0]["NotificationRequestItem"]

    assert payload["live"] == "false"
    assert event_id == n.key_of(item)
    assert item["additionalData"]["metadata.price_id"] == samples.SAMPLE_PRICE_ID
    assert scheme.sample("AUTHORISATION", mode="live")[1] != event_id
    assert scheme.sign(secret=n.KEY, body=body, timestamp=NOW, event_id=event_id) == {}
    signed = json.loads(scheme.body_sign(secret=n.KEY, body=body))
    assert is_valid_hmac_notification(signed, n.KEY)


def test_a_sample_of_an_unknown_type_names_the_known_ones():
    with pytest.raises(KeyError, match="AUTHORISATION"):
        scheme.sample("payment.nope", mode="live")
