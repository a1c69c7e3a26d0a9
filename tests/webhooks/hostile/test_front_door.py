"""Regressions for the hostile requests seen against `make run` (issue 8): each failed before."""

import json
import time

import pytest
from django.test import Client

from providers import base as scheme_base
from providers.exceptions import InvalidSignature, MalformedSignature
from providers.standard import provider as standard_module
from providers.stripe import provider as stripe_module
from tests.conftest import as_client_headers, post_json, signed_headers
from tests.webhooks.hostile.bodies import HOSTILE_BODIES, STANDARD_ACCEPTS, valid_event
from webhooks.models import WebhookEvent

pytestmark = pytest.mark.django_db

LONG_DIGITS = "1" * 4301  # past Python's int max str digits (4,300): int() raised ValueError


@pytest.fixture
def debug_client(settings):
    """DEBUG on, as `make run` had it: Django's technical pages list a failing frame's locals."""
    settings.DEBUG = True
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    return Client(raise_request_exception=False)


def _assert_json_error(response, status: int, code: str):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == code


# --- Signature headers -------------------------------------------------------------------------------


def test_a_stripe_timestamp_of_thousands_of_digits_is_malformed_and_leaks_nothing_under_debug(
    debug_client, stripe_endpoint, stripe_secret
):
    body = json.dumps(valid_event()).encode()

    response = post_json(debug_client, "/webhooks/stripe/", body, {"Stripe-Signature": f"t={LONG_DIGITS},v1=00"})

    _assert_json_error(response, 400, "malformed_signature")
    assert stripe_secret.encode() not in response.content and body not in response.content


def test_a_standard_timestamp_of_thousands_of_digits_is_malformed(debug_client, standard_endpoint, standard_secret):
    body = json.dumps(valid_event()).encode()
    headers = signed_headers("standard", standard_secret, body, event_id="msg_1")
    headers["webhook-timestamp"] = LONG_DIGITS

    response = post_json(debug_client, "/webhooks/acme/", body, headers)

    _assert_json_error(response, 400, "malformed_signature")


def _stripe_header_parse(header: str):
    return scheme_base.timestamped_hex_signatures_parse(header, name="Stripe-Signature", separator=",", timestamp_key="t", signature_key="v1")


@pytest.mark.parametrize("digits", ["1" * 13, "0" * 13 + "1767225600"], ids=["13-digits", "zero-padded"])
def test_a_timestamp_longer_than_12_digits_is_malformed_before_int(digits):
    with pytest.raises(MalformedSignature):
        _stripe_header_parse(f"t={digits},v1={'ab' * 32}")


def test_an_empty_v1_is_not_a_signature_entry():
    with pytest.raises(MalformedSignature):
        _stripe_header_parse("t=1767225600,v1=")


def test_more_signature_entries_than_the_cap_is_malformed_signature(stripe_endpoint, client):
    body = json.dumps(valid_event()).encode()
    header = "t=1767225600," + ",".join([f"v1={'ab' * 32}"] * (2 * scheme_base.MAX_SIGNATURE_ENTRIES))

    _assert_json_error(post_json(client, "/webhooks/stripe/", body, {"Stripe-Signature": header}), 400, "malformed_signature")


def test_standard_entries_past_the_cap_are_malformed_signature(standard_endpoint, standard_secret, client):
    body = json.dumps(valid_event()).encode()
    headers = signed_headers("standard", standard_secret, body, event_id="msg_cap")
    headers["webhook-signature"] = " ".join([headers["webhook-signature"]] * (scheme_base.MAX_SIGNATURE_ENTRIES + 1))

    _assert_json_error(post_json(client, "/webhooks/acme/", body, headers), 400, "malformed_signature")


def test_stripe_computes_one_mac_per_key_whatever_the_number_of_entries(monkeypatch, stripe_secret):
    calls = []
    real = scheme_base.hmac_sha256
    monkeypatch.setattr(scheme_base, "hmac_sha256", lambda key, message: calls.append(1) or real(key, message))
    keys = [stripe_module.scheme.secret_parse(stripe_secret), stripe_module.scheme.secret_parse(stripe_secret + "x")]
    entries = ",".join(f"v1={i:064x}" for i in range(scheme_base.MAX_SIGNATURE_ENTRIES))
    # Entries of the wrong size (empty, short, long, odd) are skipped without any crypto.
    header = f"t={int(time.time())},{entries},v1=,v1=ab,v1={'ab' * 33},v1={'zz' * 32}"

    with pytest.raises(InvalidSignature):
        stripe_module.scheme.verify(headers={"Stripe-Signature": header}, body=b"{}", keys=keys, tolerance=300, now=time.time())

    assert len(calls) == 2


def test_standard_skips_entries_of_the_wrong_size_before_any_crypto(monkeypatch, standard_secret, ed25519_keys):
    calls = []
    real = standard_module.hmac_sha256
    monkeypatch.setattr(standard_module, "hmac_sha256", lambda key, message: calls.append(1) or real(key, message))
    keys = [standard_module.scheme.secret_parse(standard_secret), standard_module.scheme.secret_parse(ed25519_keys[1])]
    short = "v1,AAAA v1a,AAAA v1," + "A" * 200 + " v2," + "A" * 44 + " v1, v1a,"
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())), "webhook-signature": short}

    with pytest.raises(standard_module.MalformedSignature):
        standard_module.scheme.verify(headers=headers, body=b"{}", keys=keys, tolerance=300, now=time.time())

    assert calls == []


# --- Signed hostile bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_a_signed_stripe_body_that_is_not_strict_json_is_invalid_payload_and_not_stored(
    name, client, stripe_endpoint, stripe_secret
):
    body = HOSTILE_BODIES[name]

    response = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))

    _assert_json_error(response, 400, "invalid_payload")
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize("name", sorted(set(HOSTILE_BODIES) - STANDARD_ACCEPTS))
def test_a_signed_standard_body_that_is_not_strict_json_is_invalid_payload_and_not_stored(
    name, client, standard_endpoint, standard_secret
):
    body = HOSTILE_BODIES[name]

    response = post_json(client, "/webhooks/acme/", body, signed_headers("standard", standard_secret, body, event_id="msg_h"))

    _assert_json_error(response, 400, "invalid_payload")
    assert WebhookEvent.objects.count() == 0


def test_strict_json_still_reads_what_providers_send():
    body = json.dumps(valid_event("evt_ok"), ensure_ascii=False).encode()

    assert scheme_base.json_object_parse(body)["data"]["object"]["note"] == 'é 😀 [{"]}'
    assert scheme_base.json_object_parse(b'{"a": "\\ud83d\\ude00", "b": [1.5, -2e10, 3]}')["a"] == "😀"


# --- Paths and error pages ---------------------------------------------------------------------------


def test_a_post_without_the_trailing_slash_is_served_like_the_slashed_path(debug_client, stripe_endpoint, stripe_secret):
    body = json.dumps(valid_event()).encode()

    response = post_json(debug_client, "/webhooks/stripe", body, signed_headers("stripe", stripe_secret, body))

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert WebhookEvent.objects.count() == 1


@pytest.mark.parametrize("path", ["/webhooks/nobody/", "/webhooks/nobody", "/webhooks/a/b/c", "/webhooks/%00/", "/webhooks"])
def test_an_unknown_webhook_path_is_a_json_404_even_under_debug(debug_client, db, path):
    _assert_json_error(debug_client.post(path, b"{}", content_type="application/json"), 404, "unknown_endpoint")


def test_an_api_404_is_json_not_found_even_under_debug(debug_client):
    _assert_json_error(debug_client.get("/api/v1/nothing-here/"), 404, "not_found")


@pytest.mark.parametrize("path", ["/webhooks/stripe/", "/api/v1/events/"])
def test_a_bad_host_is_a_json_400_even_under_debug(debug_client, stripe_endpoint, path):
    response = debug_client.post(path, b"{}", content_type="application/json", HTTP_HOST="evil.example")

    _assert_json_error(response, 400, "bad_request")


def test_an_unexpected_error_is_a_json_500_that_shows_no_secret_even_under_debug(
    debug_client, stripe_endpoint, stripe_secret, monkeypatch
):
    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("webhooks.views.webhook_event_receive", explode)
    body = json.dumps(valid_event()).encode()

    response = post_json(debug_client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))

    _assert_json_error(response, 500, "server_error")
    assert b"boom" not in response.content and body not in response.content


def test_the_json_handlers_answer_without_debug_and_the_admin_keeps_html(client, db):
    _assert_json_error(client.get("/api/v1/nothing-here/"), 404, "not_found")
    assert client.get("/admin/nothing-here/", follow=False)["Content-Type"].startswith("text/html")


def test_an_error_report_of_a_failed_verification_shows_neither_the_body_nor_a_secret(
    stripe_endpoint, stripe_secret, monkeypatch
):
    from django.views.debug import ExceptionReporter

    from webhooks.receiving import webhook_event_receive

    def explode(macs, signatures):
        raise RuntimeError("boom")

    monkeypatch.setattr(scheme_base, "any_mac_matches", explode)
    marker = "cus_marker_5d1e0b"
    body = json.dumps({**valid_event(), "customer": marker}).encode()
    with pytest.raises(RuntimeError) as caught:
        webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", stripe_secret, body))

    reporter = ExceptionReporter(None, caught.type, caught.value, caught.tb)
    frames = [f for f in reporter.get_traceback_frames() if "/tests/" not in f["filename"]]  # not this test's own
    functions = [f["function"] for f in frames]
    assert "webhook_event_receive" in functions and "verify" in functions
    shown = repr([frame["vars"] for frame in frames])
    assert marker not in shown and stripe_secret not in shown


def test_a_request_body_is_read_from_the_headers_of_the_django_test_client_as_usual(client, stripe_endpoint, stripe_secret):
    body = json.dumps(valid_event()).encode()
    response = client.generic(
        "POST", "/webhooks/stripe/", body, content_type="application/json",
        **as_client_headers(signed_headers("stripe", stripe_secret, body)),
    )
    assert response.status_code == 200
