"""POST /webhooks/<slug>/ row by row of CONTRACT.md's table, for both schemes, on the real database."""

import base64
import json
import logging
import secrets
import time
from dataclasses import dataclass

import pytest
import time_machine

from providers.standard import samples as standard_samples
from providers.stripe import samples
from tests.conftest import post_json, signed_headers
from webhooks.endpoints import endpoint_secret_add, endpoint_secret_remove
from webhooks.models import WebhookEndpoint, WebhookEvent
from webhooks.receiving import webhook_event_body, webhook_event_headers

pytestmark = pytest.mark.django_db

# A value that only ever exists inside a request body, to look for in logs and ciphertext.
BODY_MARKER = "cus_body_marker_9f31c7"


@dataclass
class Provider:
    """One endpoint and how its provider builds and signs a delivery."""

    scheme: str
    slug: str
    secret: str

    def delivery(self, event_type: str = "invoice.paid", *, event_id: str | None = None) -> tuple[dict, str]:
        """(payload, provider event id) built from Stripe's published sample objects."""
        obj = samples.stripe_object_for_event_type(event_type)
        obj["customer"] = BODY_MARKER
        if self.scheme == "stripe":
            event = samples.stripe_event(event_type, obj, event_id=event_id)
            return event, event["id"]
        return standard_samples.standard_event(event_type, obj), event_id or f"msg_{secrets.token_hex(12)}"

    def headers(self, body: bytes, event_id: str, *, secret: str | None = None, timestamp: int | None = None) -> dict:
        return signed_headers(self.scheme, secret or self.secret, body, event_id=event_id, timestamp=timestamp)

    def post(self, client, body: bytes, headers: dict, *, slug: str | None = None):
        return post_json(client, f"/webhooks/{slug or self.slug}/", body, headers)

    def deliver(self, client, payload: dict, event_id: str, **sign):
        body = json.dumps(payload).encode()
        return self.post(client, body, self.headers(body, event_id, **sign))


@pytest.fixture(params=["stripe", "standard"])
def provider(request) -> Provider:
    return _provider_for(request, request.param)


def _provider_for(request, scheme: str) -> Provider:
    endpoint = request.getfixturevalue(f"{scheme}_endpoint")
    return Provider(scheme, endpoint.slug, request.getfixturevalue(f"{scheme}_secret"))


def _new_secret(scheme: str) -> str:
    if scheme == "stripe":
        return f"whsec_{secrets.token_hex(16)}"
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# --- 200 accepted / duplicate -----------------------------------------------------------------------


def test_a_verified_new_event_is_accepted_and_stored_byte_exact_with_its_used_headers(client, provider):
    payload, event_id = provider.delivery("checkout.session.completed")
    body = json.dumps(payload, indent=1).encode()  # any byte layout the provider chose is kept as is
    headers = provider.headers(body, event_id)

    response = provider.post(client, body, headers)

    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "accepted"
    event = WebhookEvent.objects.get(id=answer["event_id"])
    assert event.idempotency_key == f"{provider.slug}:{event_id}"
    assert event.provider_event_id == event_id
    assert event.event_type == "checkout.session.completed"
    assert event.status == WebhookEvent.Status.RECEIVED
    assert webhook_event_body(event=event) == body
    assert webhook_event_headers(event=event) == headers


def test_the_raw_body_is_encrypted_at_rest(client, provider):
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()

    response = provider.post(client, body, provider.headers(body, event_id))

    event = WebhookEvent.objects.get(id=response.json()["event_id"])
    ciphertext = bytes(event.body_encrypted)
    assert body not in ciphertext
    assert BODY_MARKER.encode() not in ciphertext
    assert BODY_MARKER.encode() not in bytes(event.headers_encrypted)


def test_a_redelivery_of_a_stored_event_is_a_duplicate_with_the_same_event_id(client, provider):
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()
    headers = provider.headers(body, event_id)

    first = provider.post(client, body, headers)
    second = provider.post(client, body, headers)

    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == "accepted"
    assert second.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    assert WebhookEvent.objects.filter(idempotency_key=f"{provider.slug}:{event_id}").count() == 1


def test_a_redelivery_signed_again_later_is_a_duplicate(client, provider):
    payload, event_id = provider.delivery()

    first = provider.deliver(client, payload, event_id, timestamp=int(time.time()) - 120)
    second = provider.deliver(client, payload, event_id)

    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}


def test_a_stripe_redelivery_differing_only_in_pending_webhooks_is_a_duplicate_not_a_conflict(client, stripe_endpoint, post_stripe):
    event = samples.stripe_event("invoice.paid")
    event["pending_webhooks"] = 2
    first = post_stripe(event)
    event["pending_webhooks"] = 1

    second = post_stripe(event)

    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    assert WebhookEvent.objects.filter(provider_event_id=event["id"]).count() == 1


def test_the_same_key_with_different_content_is_an_idempotency_conflict(client, provider):
    payload, event_id = provider.delivery("invoice.paid")
    first = provider.deliver(client, payload, event_id)
    changed = json.loads(json.dumps(payload))
    changed["data"]["object" if provider.scheme == "stripe" else "amount_due"] = {"changed": True}

    response = provider.deliver(client, changed, event_id)

    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_conflict"
    assert response.json()["event_id"] == first.json()["event_id"]
    stored = WebhookEvent.objects.get(idempotency_key=f"{provider.slug}:{event_id}")
    assert webhook_event_body(event=stored) == json.dumps(payload).encode()


def test_the_same_provider_event_id_on_two_endpoints_is_two_events(client, provider):
    other = WebhookEndpoint.objects.create(slug="second", scheme=provider.scheme)
    other_secret = _new_secret(provider.scheme)
    endpoint_secret_add(endpoint=other, secret=other_secret)
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()

    first = provider.post(client, body, provider.headers(body, event_id))
    second = provider.post(client, body, provider.headers(body, event_id, secret=other_secret), slug="second")

    assert first.json()["status"] == second.json()["status"] == "accepted"
    assert first.json()["event_id"] != second.json()["event_id"]


# --- 400: signatures and payloads; nothing stored ---------------------------------------------------


def _missing_header_cases():
    yield "stripe", ("Stripe-Signature",)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        yield "standard", (name,)
    yield "standard", ("webhook-id", "webhook-timestamp", "webhook-signature")


@pytest.mark.parametrize(("scheme", "dropped"), list(_missing_header_cases()))
def test_a_delivery_without_its_signature_headers_is_missing_signature(client, request, scheme, dropped):
    provider = _provider_for(request, scheme)
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()
    headers = {name: value for name, value in provider.headers(body, event_id).items() if name not in dropped}

    response = provider.post(client, body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "missing_signature"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    ("scheme", "header", "value"),
    [
        ("stripe", "Stripe-Signature", "garbage"),
        ("stripe", "Stripe-Signature", "t=1767225600"),
        ("stripe", "Stripe-Signature", "t=soon,v1=" + "ab" * 32),
        ("standard", "webhook-timestamp", "yesterday"),
        ("standard", "webhook-signature", "garbage"),
        ("standard", "webhook-id", "msg_" + "x" * 300),
    ],
)
def test_a_malformed_signature_header_is_malformed_signature(client, request, scheme, header, value):
    provider = _provider_for(request, scheme)
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()
    headers = {**provider.headers(body, event_id), header: value}

    response = provider.post(client, body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "malformed_signature"}
    assert not WebhookEvent.objects.exists()


def test_a_delivery_signed_with_another_secret_is_invalid_and_nothing_is_stored(client, provider):
    payload, event_id = provider.delivery()

    response = provider.deliver(client, payload, event_id, secret=_new_secret(provider.scheme))

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature"}
    assert not WebhookEvent.objects.exists()


def test_a_tampered_body_is_invalid_and_nothing_is_stored(client, provider):
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()
    headers = provider.headers(body, event_id)

    response = provider.post(client, body.replace(BODY_MARKER.encode(), b"cus_attacker_000000000"), headers)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("offset", [-301, 301, -86_400], ids=["old", "future", "a-day-old"])
def test_a_timestamp_outside_the_tolerance_is_refused(client, provider, offset):
    payload, event_id = provider.delivery()
    now = int(time.time())

    # Frozen on a whole second: a busy machine must not carry "now + 301" back inside the window.
    with time_machine.travel(now, tick=False):
        response = provider.deliver(client, payload, event_id, timestamp=now + offset)

    assert response.status_code == 400
    assert response.json() == {"error": "timestamp_out_of_tolerance"}
    assert not WebhookEvent.objects.exists()


def test_a_delivery_held_back_past_the_tolerance_is_refused(client, provider):
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()
    headers = provider.headers(body, event_id)

    with time_machine.travel(time.time() + 301, tick=False):
        response = provider.post(client, body, headers)

    assert response.status_code == 400
    assert response.json() == {"error": "timestamp_out_of_tolerance"}


def test_the_tolerance_comes_from_the_settings(client, provider, settings):
    settings.WEBHOOK_TOLERANCE_SECONDS = 30
    payload, event_id = provider.delivery()

    response = provider.deliver(client, payload, event_id, timestamp=int(time.time()) - 60)

    assert response.json() == {"error": "timestamp_out_of_tolerance"}


@pytest.mark.parametrize("body", [b"this is not json", b'["a", "list"]', b"\xff\xfe"], ids=["text", "array", "bytes"])
def test_a_verified_body_that_is_not_a_json_object_is_an_invalid_payload(client, provider, body):
    response = provider.post(client, body, provider.headers(body, "msg_not_json"))

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_payload"}
    assert not WebhookEvent.objects.exists()


def test_a_verified_stripe_event_without_an_id_is_an_invalid_payload(client, stripe_endpoint, post_stripe):
    event = samples.stripe_event("charge.refunded")
    del event["id"]

    response = post_stripe(event)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_payload"}
    assert not WebhookEvent.objects.exists()


def test_a_verified_stripe_event_whose_id_postgresql_cannot_store_is_an_invalid_payload(client, stripe_endpoint, post_stripe):
    event = samples.stripe_event("invoice.paid")
    event["id"] += "\x00"

    response = post_stripe(event)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_payload"}


def test_a_verified_event_whose_type_holds_a_nul_character_is_stored(client, provider):
    payload, event_id = provider.delivery("invoice.paid")
    payload["type"] = "invoice.paid\x00"

    response = provider.deliver(client, payload, event_id)

    assert response.status_code == 200
    assert WebhookEvent.objects.get(id=response.json()["event_id"]).event_type == "invoice.paid"


# --- 413, 404, 405 ---------------------------------------------------------------------------------


def test_a_body_over_the_size_limit_is_refused_before_verification(client, provider, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 2048
    payload, event_id = provider.delivery()
    payload["padding"] = "x" * 4096
    body = json.dumps(payload).encode()

    response = provider.post(client, body, provider.headers(body, event_id))

    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large"}
    assert not WebhookEvent.objects.exists()


def test_a_body_exactly_at_the_size_limit_is_accepted(client, provider, settings):
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()
    settings.WEBHOOK_MAX_BODY_BYTES = len(body)

    response = provider.post(client, body, provider.headers(body, event_id))

    assert response.status_code == 200
    assert response.json()["status"] == "accepted"


def test_a_declared_content_length_over_the_limit_is_refused_without_reading_the_body(client, provider, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 2048
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()[:1000]

    response = client.generic(
        "POST", f"/webhooks/{provider.slug}/", body, content_type="application/json", CONTENT_LENGTH="5000000"
    )

    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large"}


def test_an_unknown_slug_is_not_found(client, provider):
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()

    response = provider.post(client, body, provider.headers(body, event_id), slug="no-such-endpoint")

    assert response.status_code == 404
    assert response.json() == {"error": "unknown_endpoint"}
    assert not WebhookEvent.objects.exists()


def test_an_inactive_endpoint_is_not_found(client, provider):
    WebhookEndpoint.objects.filter(slug=provider.slug).update(is_active=False)
    payload, event_id = provider.delivery()

    response = provider.deliver(client, payload, event_id)

    assert response.status_code == 404
    assert response.json() == {"error": "unknown_endpoint"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD"])
def test_any_method_but_post_is_not_allowed(client, provider, method):
    response = client.generic(method, f"/webhooks/{provider.slug}/")

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert not WebhookEvent.objects.exists()


# --- Secret rotation ----------------------------------------------------------------------------------


def test_after_adding_a_secret_both_the_old_and_the_new_one_verify(client, provider):
    endpoint = WebhookEndpoint.objects.get(slug=provider.slug)
    new_secret = _new_secret(provider.scheme)
    endpoint_secret_add(endpoint=endpoint, secret=new_secret)

    with_old = provider.deliver(client, *provider.delivery())
    with_new = provider.deliver(client, *provider.delivery(), secret=new_secret)

    assert with_old.status_code == with_new.status_code == 200
    assert with_old.json()["status"] == with_new.json()["status"] == "accepted"


def test_after_removing_a_secret_it_no_longer_verifies_and_the_remaining_one_does(client, provider):
    endpoint = WebhookEndpoint.objects.get(slug=provider.slug)
    new_secret = _new_secret(provider.scheme)
    endpoint_secret_add(endpoint=endpoint, secret=new_secret)
    endpoint_secret_remove(endpoint=endpoint, secret=provider.secret)

    with_removed = provider.deliver(client, *provider.delivery())
    with_new = provider.deliver(client, *provider.delivery(), secret=new_secret)

    assert with_removed.status_code == 400
    assert with_removed.json() == {"error": "invalid_signature"}
    assert with_new.json()["status"] == "accepted"
    assert WebhookEvent.objects.count() == 1


def test_a_standard_endpoint_rotates_from_an_hmac_secret_to_an_ed25519_key(client, standard_endpoint, standard_secret, ed25519_keys):
    private_key, public_key = ed25519_keys
    provider = Provider("standard", standard_endpoint.slug, standard_secret)
    endpoint_secret_add(endpoint=standard_endpoint, secret=public_key)

    with_hmac = provider.deliver(client, *provider.delivery())
    with_ed25519 = provider.deliver(client, *provider.delivery(), secret=private_key)
    endpoint_secret_remove(endpoint=standard_endpoint, secret=standard_secret)
    with_removed_hmac = provider.deliver(client, *provider.delivery())

    assert with_hmac.json()["status"] == with_ed25519.json()["status"] == "accepted"
    assert with_removed_hmac.json() == {"error": "invalid_signature"}


# --- Logging ------------------------------------------------------------------------------------------


def test_refused_requests_are_logged_without_their_body_or_the_secret(client, provider, caplog):
    caplog.set_level(logging.DEBUG)
    payload, event_id = provider.delivery()
    body = json.dumps(payload).encode()
    good = provider.headers(body, event_id)
    provider.post(client, body, good)  # stored, so the conflict below has something to conflict with
    changed = json.dumps({**payload, "type": "changed.type"}).encode()
    refusals = {
        "invalid_signature": provider.post(client, body, provider.headers(body, event_id, secret=_new_secret(provider.scheme))),
        "timestamp_out_of_tolerance": provider.post(
            client, body, provider.headers(body, event_id, timestamp=int(time.time()) - 3600)
        ),
        "malformed_signature": provider.post(
            client, body, {**good, ("Stripe-Signature" if provider.scheme == "stripe" else "webhook-signature"): "garbage"}
        ),
        "idempotency_conflict": provider.post(client, changed, provider.headers(changed, event_id)),
    }

    assert {code: response.json()["error"] for code, response in refusals.items()} == {code: code for code in refusals}
    messages = [record.getMessage() for record in caplog.records]
    assert any("invalid_signature" in message for message in messages)
    for record, message in zip(caplog.records, messages, strict=True):
        text = message + repr(record.args) + repr(getattr(record, "exc_text", "") or "")
        assert BODY_MARKER not in text
        assert body.decode()[:60] not in text
        assert provider.secret not in text
        assert provider.secret.removeprefix("whsec_") not in text
