"""Properties of the parsers that run on unauthenticated (headers) and signed (bodies) input."""

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.strict_json import MAX_JSON_DEPTH
from providers.base import json_strict_loads
from providers.standard import provider as standard
from providers.stripe import provider as stripe
from webhooks.exceptions import InvalidPayload, SignatureError

KEYS_STRIPE = [stripe.scheme.secret_parse("whsec_" + "a" * 32)]
KEYS_STANDARD = [standard.scheme.secret_parse("whsec_" + "A" * 44)]

# Header text as a WSGI server hands it over (latin-1), biased towards the shapes the parsers split on.
_PIECES = st.sampled_from(["t=", "v1=", "v0=", ",", " ", "=", "v1,", "v1a,", "1767225600", "ab" * 32, "00", "\x00", "²", "٣"])
header_text = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=255), max_size=300),
    st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=80).map("".join),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(header_text)
def test_stripe_header_verification_raises_nothing_but_signature_errors(header):
    try:
        stripe.scheme.verify(headers={"Stripe-Signature": header}, body=b"{}", keys=KEYS_STRIPE, tolerance=300, now=time.time())
    except SignatureError:
        pass


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(msg_id=header_text, timestamp=header_text, signature=header_text)
def test_standard_header_verification_raises_nothing_but_signature_errors(msg_id, timestamp, signature):
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    try:
        standard.scheme.verify(headers=headers, body=b"{}", keys=KEYS_STANDARD, tolerance=300, now=time.time())
    except SignatureError:
        pass


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text())
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=30)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_the_strict_parser_raises_nothing_but_invalid_payload_on_any_bytes(data):
    try:
        json_strict_loads(data)
    except InvalidPayload:
        pass


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b":", b",", b"1", b"NaN", b'"a"', b"\\ud800"]), max_size=200))
def test_the_strict_parser_raises_nothing_but_invalid_payload_on_json_shaped_noise(pieces):
    try:
        json_strict_loads(b"".join(pieces))
    except InvalidPayload:
        pass


@settings(max_examples=300)
@given(json_value)
def test_the_strict_parser_reads_back_any_strict_json_document(value):
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate drawn by st.text(): must be refused
        try:
            json_strict_loads(json.dumps(value).encode())
        except InvalidPayload:
            return
        raise AssertionError("a lone surrogate was accepted")
    assert json_strict_loads(text.encode()) == value


@given(st.integers(min_value=MAX_JSON_DEPTH + 1, max_value=5000))
def test_the_strict_parser_refuses_any_depth_past_the_limit(depth):
    try:
        json_strict_loads(b"[" * depth + b"]" * depth)
    except InvalidPayload:
        return
    raise AssertionError("accepted")
