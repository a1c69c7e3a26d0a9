"""Unit tests of the Lemon Squeezy scheme's verify(), sign(), secret_parse() and sample().

There is no official Python SDK that verifies Lemon Squeezy webhooks: the independent signer is
Lemon Squeezy's documented rule ("X-Signature: the hex digest of an HMAC-SHA256 of the raw body,
keyed by the signing secret", https://docs.lemonsqueezy.com/help/webhooks/signing-requests)
written here with hashlib/hmac, plus a vector computed by `openssl dgst -sha256 -hmac`.
"""

import hashlib
import hmac
import json
import shutil
import subprocess
import time
from datetime import UTC, datetime

import pytest

from providers import scheme_get
from providers.lemonsqueezy import samples
from webhooks.exceptions import InvalidPayload, InvalidSecret, InvalidSignature, MalformedSignature, MissingSignature

SECRET = "lemon-secret-123"
OTHER_SECRET = "another-signing-secret"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
TOLERANCE = 300

# Computed once with: printf '%s' "$VECTOR_BODY" | openssl dgst -sha256 -hmac 'lemon-secret-123'
VECTOR_BODY = (
    b'{"meta":{"event_name":"order_created"},"data":{"type":"orders","id":"1",'
    b'"attributes":{"updated_at":"2021-08-17T09:45:53.000000Z"}}}'
)
VECTOR_SIGNATURE = "d31629e08d6059b763da0c4ca04a2eb805bda3ad59dd8ec4c4784b773baf013f"

scheme = scheme_get("lemonsqueezy")


def lemon_squeezy_signature(secret: str, body: bytes) -> str:
    """Lemon Squeezy's documented signature, independently of providers.lemonsqueezy."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _body(event_name: str = "order_created", **attributes) -> bytes:
    event = samples.lemonsqueezy_sample_event(event_name)
    event["data"]["attributes"].update(attributes)
    return json.dumps(event).encode()


def _verify(header: str | None, body: bytes, *, secrets=(SECRET,), headers: dict | None = None):
    if headers is None:
        headers = {} if header is None else {"X-Signature": header}
    keys = [scheme.secret_parse(secret) for secret in secrets]
    return scheme.verify(headers=headers, body=body, keys=keys, tolerance=TOLERANCE, now=NOW)


# --- Signature ---------------------------------------------------------------------------------------


def test_a_delivery_signed_as_lemon_squeezy_documents_verifies():
    body = _body("order_created", updated_at="2026-01-01T00:00:00.000000Z")
    event = json.loads(body)

    delivery = _verify(lemon_squeezy_signature(SECRET, body), body)

    assert delivery.provider_event_id == f"order_created:orders:{event['data']['id']}:2026-01-01T00:00:00.000000Z"
    assert delivery.event_type == "order_created"
    assert delivery.payload == event
    assert delivery.provider_created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert delivery.used_headers == {"X-Signature": lemon_squeezy_signature(SECRET, body)}


def test_the_published_vector_verifies():
    delivery = _verify(VECTOR_SIGNATURE, VECTOR_BODY)

    assert delivery.provider_event_id == "order_created:orders:1:2021-08-17T09:45:53.000000Z"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_computes_the_same_signature_as_our_signer():
    body = _body("subscription_created")
    out = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", SECRET], input=body, capture_output=True, check=True)
    openssl_hex = out.stdout.decode().strip().rsplit(" ", 1)[-1]

    assert scheme.sign(secret=SECRET, body=body, timestamp=0, event_id="")["X-Signature"] == openssl_hex
    assert _verify(openssl_hex, body).event_type == "subscription_created"


def test_our_signer_agrees_with_the_independent_one():
    body = _body()

    headers = scheme.sign(secret=SECRET, body=body, timestamp=NOW, event_id="ignored")

    assert headers == {"X-Signature": lemon_squeezy_signature(SECRET, body)}
    assert scheme.sign(secret=SECRET, body=VECTOR_BODY, timestamp=0, event_id="") == {"X-Signature": VECTOR_SIGNATURE}


def test_an_uppercase_hex_signature_verifies():
    body = _body()

    assert _verify(lemon_squeezy_signature(SECRET, body).upper(), body).event_type == "order_created"


def test_a_tampered_body_is_invalid():
    body = _body()
    signature = lemon_squeezy_signature(SECRET, body)

    with pytest.raises(InvalidSignature):
        _verify(signature, body.replace(b'"paid"', b'"paie"'))


def test_a_signature_made_with_another_secret_is_invalid():
    body = _body()

    with pytest.raises(InvalidSignature):
        _verify(lemon_squeezy_signature(OTHER_SECRET, body), body)


def test_during_rotation_either_active_secret_verifies():
    body = _body()

    for signer in (SECRET, OTHER_SECRET):
        assert _verify(lemon_squeezy_signature(signer, body), body, secrets=(SECRET, OTHER_SECRET)).event_type == "order_created"


def test_a_removed_secret_no_longer_verifies():
    body = _body()

    with pytest.raises(InvalidSignature):
        _verify(lemon_squeezy_signature(OTHER_SECRET, body), body, secrets=(SECRET,))


def test_there_is_no_timestamp_so_an_old_delivery_still_verifies():
    # Lemon Squeezy signs no time: replays are stopped by the idempotency key, not by a tolerance.
    body = _body(updated_at="2019-01-01T00:00:00.000000Z")

    assert _verify(lemon_squeezy_signature(SECRET, body), body).provider_event_id.endswith(":2019-01-01T00:00:00.000000Z")


def test_a_delivery_without_the_header_is_missing_signature():
    body = _body()

    with pytest.raises(MissingSignature):
        _verify(None, body)
    with pytest.raises(MissingSignature):
        _verify("", body)


@pytest.mark.parametrize(
    "header",
    [
        "not-hex-" + "0" * 56,
        "abc",
        "0" * 63,
        "0" * 66,
        "sha256=" + "0" * 64,
        ",".join(["0" * 64] * 2),  # a repeated header, joined by the server
        " ".join(["0" * 64] * 300),
        "0" * 100_000,
        "\u00b2" * 64,
    ],
)
def test_a_header_that_is_not_one_hex_hmac_is_malformed(header):
    with pytest.raises(MalformedSignature):
        _verify(header, _body())


def test_a_huge_hostile_header_is_refused_fast_without_hashing_the_body():
    body = b"x" * (1 << 20)
    header = ",".join(["ab" * 32] * 5000)
    started = time.perf_counter()

    with pytest.raises(MalformedSignature):
        _verify(header, body, secrets=[SECRET] * 32)

    assert time.perf_counter() - started < 0.05


# --- Payload -----------------------------------------------------------------------------------------


def _signed_verify(payload) -> object:
    body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    return _verify(lemon_squeezy_signature(SECRET, body), body)


@pytest.mark.parametrize(
    "path",
    [("meta", "event_name"), ("data", "type"), ("data", "id"), ("data", "attributes", "updated_at"), ("meta",), ("data",)],
)
def test_a_verified_body_lacking_a_part_of_the_derived_id_is_an_invalid_payload(path):
    event = samples.lemonsqueezy_sample_event("order_created")
    holder = event
    for key in path[:-1]:
        holder = holder[key]
    del holder[path[-1]]

    with pytest.raises(InvalidPayload):
        _signed_verify(event)


@pytest.mark.parametrize("updated_at", ["", "yesterday", 1700000000, None, "2021-08-17T09:45:53", "9" * 200])
def test_a_verified_body_whose_updated_at_is_not_an_aware_time_is_an_invalid_payload(updated_at):
    event = samples.lemonsqueezy_sample_event("order_created")
    event["data"]["attributes"]["updated_at"] = updated_at

    with pytest.raises(InvalidPayload):
        _signed_verify(event)


def test_a_verified_body_whose_id_holds_a_nul_or_is_too_long_is_an_invalid_payload():
    for bad in ("1\x002", "9" * 61, "", True):
        event = samples.lemonsqueezy_sample_event("order_created")
        event["data"]["id"] = bad
        with pytest.raises(InvalidPayload):
            _signed_verify(event)


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"{", b'{"a": NaN}', b'{"a": 1, "a": 2}'])
def test_a_verified_body_that_is_not_a_strict_json_object_is_an_invalid_payload(body):
    with pytest.raises(InvalidPayload):
        _signed_verify(body)


def test_a_numeric_json_api_id_is_read_as_its_string():
    event = samples.lemonsqueezy_sample_event("order_created")
    event["data"]["id"] = 42

    assert _signed_verify(event).provider_event_id.startswith("order_created:orders:42:")


# --- Secrets, mode, samples ------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["abcdef", "x", "a secret with spaces inside", "s" * 40, "ünïcode-sêcret"])
def test_any_non_empty_secret_of_reasonable_length_is_accepted(secret):
    assert scheme.secret_parse(secret).material == secret.encode()


@pytest.mark.parametrize("secret", ["", "   ", "\t\n", " leading", "trailing\n", "s" * 257, "line\nbreak"])
def test_an_empty_blank_or_unreasonable_secret_is_refused(secret):
    with pytest.raises(InvalidSecret):
        scheme.secret_parse(secret)


def test_a_secret_never_appears_in_a_signing_keys_repr():
    assert SECRET not in repr(scheme.secret_parse(SECRET))


@pytest.mark.parametrize(("test_mode", "mode", "mismatch"), [(True, "live", True), (False, "test", True), (True, "test", False),
                                                            (False, "live", False)])
def test_a_test_mode_event_mismatches_a_live_endpoint_and_vice_versa(test_mode, mode, mismatch):
    event = samples.lemonsqueezy_sample_event("order_created", test_mode=test_mode)

    assert scheme.mode_mismatch(event, mode=mode) is mismatch


@pytest.mark.parametrize("test_mode", [None, "false", 0, "missing"])
def test_a_live_endpoint_fulfils_only_an_event_that_says_test_mode_false(test_mode):
    meta = {} if test_mode == "missing" else {"test_mode": test_mode}
    assert scheme.mode_mismatch({"meta": meta, "data": {"attributes": {}}}, mode="live") is True
    assert scheme.mode_mismatch({"meta": meta, "data": {"attributes": {}}}, mode="test") is False


def test_a_sample_verifies_with_its_derived_id_and_matches_the_endpoint_mode():
    for event_type in samples.SAMPLE_EVENT_TYPES:
        body, event_id = scheme.sample(event_type, mode="test")
        delivery = _verify(lemon_squeezy_signature(SECRET, body), body)
        assert delivery.provider_event_id == event_id
        assert delivery.event_type == event_type
        assert scheme.mode_mismatch(delivery.payload, mode="test") is False


def test_each_sample_is_a_new_event():
    assert scheme.sample("order_created", mode="live")[1] != scheme.sample("order_created", mode="live")[1]


def test_an_unknown_sample_type_names_the_known_ones():
    with pytest.raises(KeyError, match="order_created"):
        scheme.sample("license_key_created", mode="live")
