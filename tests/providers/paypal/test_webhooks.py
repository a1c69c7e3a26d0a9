"""PayPal deliveries through POST /webhooks/<slug>/ and event processing, on the real database.

Signed with the throwaway CA's leaf key (tests/providers/paypal/conftest.py), whose certificate a
local https server serves on the one allow-listed host.
"""

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model

from fulfillment.models import Entitlement
from fulfillment.selectors import entitlement_list
from fulfillment.services import catalog_import
from providers import scheme_get
from providers.paypal import samples
from tests.conftest import post_json
from tests.providers.paypal.conftest import paypal_signature
from webhooks import endpoints
from webhooks.models import WebhookEvent
from webhooks.processing import webhook_event_process

pytestmark = pytest.mark.django_db
WEBHOOK_ID = "8PT597110X687430LKGECATA"
T = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def paypal_endpoint(db):
    return endpoints.webhook_endpoint_create(slug="paypal", scheme="paypal", secret=WEBHOOK_ID)


@pytest.fixture
def catalog(db):
    catalog_import(data={"products": [
        {"provider": "paypal", "price_id": samples.SAMPLE_SKU, "entitlements": ["pro", "reports"]},
        {"provider": "paypal", "price_id": samples.SAMPLE_PLAN_ID, "entitlements": ["member"]},
    ]})


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", email="alice@example.com")


@pytest.fixture
def post(client, pki, cert_server, paypal_endpoint):
    def post(event: dict | bytes, *, cert: str = "cert.pem", key=None, body_sent: bytes | None = None):
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        transmission_id = str(uuid.uuid4())
        sent = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": sent,
            "PAYPAL-TRANSMISSION-SIG": paypal_signature(
                key or pki.signing_key, transmission_id=transmission_id, transmission_time=sent, webhook_id=WEBHOOK_ID, body=body
            ),
            "PAYPAL-CERT-URL": cert if cert.startswith("https://") else cert_server.url(cert),
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }
        return post_json(client, "/webhooks/paypal/", body_sent if body_sent is not None else body, headers)

    return post


def _process(response) -> str | None:
    return webhook_event_process(event_id=response.json()["event_id"])


def _event(event_type: str, *, at: datetime = T, user_id=None) -> dict:
    event = samples.paypal_sample_event(event_type, create_time=at)
    if user_id is not None:
        event["resource"]["custom_id"] = str(user_id)
    return event


def _active(user) -> set[str]:
    return {row.key for row in entitlement_list(user_id=user.id)}


def test_a_paid_order_is_accepted_once_and_grants_the_catalogs_entitlements(post, catalog, alice, cert_server):
    event = _event("CHECKOUT.ORDER.COMPLETED", user_id=alice.id)

    first = post(event)
    again = post(event)

    assert first.status_code == 200 and first.json()["status"] == "accepted"
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    stored = WebhookEvent.objects.get()
    assert stored.idempotency_key == f"paypal:{event['id']}" and stored.event_type == "CHECKOUT.ORDER.COMPLETED"
    assert stored.provider_created_at == T.replace(microsecond=T.microsecond // 1000 * 1000)
    assert cert_server.requests == ["/cert.pem"]  # the second delivery used the cached certificate
    assert _process(first) == "processed"
    assert _active(alice) == {"pro", "reports"}


def test_a_tampered_body_is_refused_and_not_stored(post, catalog):
    body = json.dumps(_event("CHECKOUT.ORDER.COMPLETED")).encode()

    response = post(body, body_sent=body.replace(b"100.00", b"0.01"))

    assert response.status_code == 400 and response.json() == {"error": "invalid_signature"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "cert", ["https://127.0.0.1/cert.pem", "https://169.254.169.254/latest/meta-data/", "https://api.paypal.com.evil.test/c",
             "https://api.paypal.com@evil.test/c", "https://localhost/cert.pem"]
)
def test_a_certificate_url_off_the_allow_list_is_refused_without_a_request(post, cert_server, cert):
    response = post(_event("CHECKOUT.ORDER.COMPLETED"), cert=cert)

    assert response.status_code == 400 and response.json() == {"error": "invalid_signature"}
    assert cert_server.requests == [] and not WebhookEvent.objects.exists()


def test_a_certificate_not_chaining_to_the_configured_ca_is_refused(post, pki):
    response = post(_event("CHECKOUT.ORDER.COMPLETED"), cert="rogue.pem", key=pki.rogue_key)
    assert response.status_code == 400 and response.json() == {"error": "invalid_signature"}


def test_an_unreachable_certificate_host_answers_503_so_paypal_retries(post, settings):
    from tests.support.processes import free_port

    closed = f"localhost:{free_port()}"  # allow-listed, but nothing listens there
    settings.PAYPAL_CERT_URL_HOSTS = [*settings.PAYPAL_CERT_URL_HOSTS, closed]

    response = post(_event("CHECKOUT.ORDER.COMPLETED"), cert=f"https://{closed}/cert.pem")

    assert response.status_code == 503 and response.json() == {"error": "unavailable"}
    assert response.headers["Retry-After"] == "30"
    assert not WebhookEvent.objects.exists()


def test_missing_and_unsupported_headers(client, paypal_endpoint):
    response = post_json(client, "/webhooks/paypal/", b"{}", {})
    assert response.status_code == 400 and response.json() == {"error": "missing_signature"}
    headers = {"PAYPAL-TRANSMISSION-ID": "x", "PAYPAL-TRANSMISSION-TIME": "2026-01-01T00:00:00Z", "PAYPAL-TRANSMISSION-SIG": "AAAA",
               "PAYPAL-CERT-URL": "https://api.paypal.com/c", "PAYPAL-AUTH-ALGO": "SHA1withRSA"}
    response = post_json(client, "/webhooks/paypal/", b"{}", headers)
    assert response.status_code == 400 and response.json() == {"error": "malformed_signature"}


def test_order_and_capture_of_one_purchase_grant_once(post, catalog, alice):
    # PayPal's capture names no items, so it cannot grant: the order does, once; the capture is a
    # dead letter that says its price is missing (docs/providers.md).
    _process(post(_event("CHECKOUT.ORDER.COMPLETED", user_id=alice.id)))
    assert _process(post(_event("PAYMENT.CAPTURE.COMPLETED", at=T + timedelta(seconds=1), user_id=alice.id))) == "dead"

    assert _active(alice) == {"pro", "reports"}
    assert Entitlement.objects.count() == 2
    assert "PriceNotFound" in WebhookEvent.objects.get(event_type="PAYMENT.CAPTURE.COMPLETED").last_error


def test_a_capture_that_names_its_items_grants_under_the_same_payment_as_its_order(post, catalog, alice):
    order = _event("CHECKOUT.ORDER.COMPLETED", user_id=alice.id)
    capture = _event("PAYMENT.CAPTURE.COMPLETED", at=T + timedelta(seconds=1), user_id=alice.id)
    capture["resource"]["payer"] = order["resource"]["payer"]
    capture["resource"]["purchase_units"] = [{"items": [{"sku": samples.SAMPLE_SKU}]}]
    _process(post(capture))
    _process(post(order))

    assert _active(alice) == {"pro", "reports"}
    assert Entitlement.objects.count() == 2
    assert set(Entitlement.objects.values_list("source", flat=True)) == {f"payment:{samples.SAMPLE_CAPTURE_ID}"}


def test_a_refund_revokes_what_its_capture_granted(post, catalog, alice):
    _process(post(_event("CHECKOUT.ORDER.COMPLETED", user_id=alice.id)))
    assert _active(alice) == {"pro", "reports"}

    _process(post(_event("PAYMENT.CAPTURE.REFUNDED", at=T + timedelta(minutes=5))))

    assert _active(alice) == set()


def test_a_refund_arriving_before_its_payment_leaves_nothing_granted(post, catalog, alice):
    _process(post(_event("PAYMENT.CAPTURE.REFUNDED", at=T + timedelta(minutes=5))))
    _process(post(_event("CHECKOUT.ORDER.COMPLETED", user_id=alice.id)))

    assert _active(alice) == set()
    assert set(Entitlement.objects.values_list("status", flat=True)) == {"revoked"}


def test_a_dispute_revokes_what_its_capture_granted(post, catalog, alice):
    _process(post(_event("CHECKOUT.ORDER.COMPLETED", user_id=alice.id)))
    _process(post(_event("CUSTOMER.DISPUTE.CREATED", at=T + timedelta(minutes=5))))
    assert _active(alice) == set()


def test_a_subscription_grants_until_it_is_cancelled(post, catalog, alice):
    _process(post(_event("BILLING.SUBSCRIPTION.ACTIVATED", user_id=alice.id)))
    assert _active(alice) == {"member"}

    _process(post(_event("BILLING.SUBSCRIPTION.CANCELLED", at=T + timedelta(minutes=5), user_id=alice.id)))

    assert _active(alice) == set()


def test_the_sample_payment_fulfils_against_the_documented_catalog_price(post, catalog):
    body, event_id = scheme_get("paypal").sample("CHECKOUT.ORDER.COMPLETED", mode="live")

    response = post(body)

    assert response.json()["status"] == "accepted" and event_id.startswith("WH-")
    assert _process(response) == "processed"
    assert {row.key for row in entitlement_list(customer="QYR5Z8XDVJNXQ")} == {"pro", "reports"}


def test_an_unfulfilled_type_is_stored_and_ignored(post, catalog):
    event = _event("CHECKOUT.ORDER.COMPLETED")
    event["event_type"] = "CHECKOUT.ORDER.APPROVED"
    assert _process(post(event)) == "ignored"


def test_a_sandbox_event_sent_to_a_live_endpoint_is_stored_and_ignored(post, catalog, alice):
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED", create_time=T, sandbox=True)
    event["resource"]["custom_id"] = str(alice.id)

    assert _process(post(event)) == "ignored"
    assert _active(alice) == set()


def test_sample_names_the_known_types():
    with pytest.raises(KeyError, match="CHECKOUT.ORDER.COMPLETED"):
        scheme_get("paypal").sample("NOPE", mode="live")


def test_send_test_webhook_without_a_test_key_explains_the_gap(paypal_endpoint, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.PAYPAL_TEST_SIGNING_KEY = ""
    with pytest.raises(CommandError, match="use PayPal's webhook simulator"):
        call_command("send_test_webhook", "paypal", "CHECKOUT.ORDER.COMPLETED", url="http://127.0.0.1:9/")


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_with_a_test_key_is_accepted_by_a_running_server(live_server, pki, cert_server, settings, tmp_path, catalog):
    from cryptography.hazmat.primitives import serialization
    from django.core.management import call_command

    endpoints.webhook_endpoint_create(slug="paypal", scheme="paypal", secret=WEBHOOK_ID)
    key_file = tmp_path / "paypal-test-key.pem"
    key_file.write_bytes(pki.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    settings.PAYPAL_TEST_SIGNING_KEY, settings.PAYPAL_TEST_CERT_URL = str(key_file), cert_server.url("cert.pem")
    out = io.StringIO()

    call_command("send_test_webhook", "paypal", "CHECKOUT.ORDER.COMPLETED", url=live_server.url, stdout=out)

    assert '"status": "accepted"' in out.getvalue()
    event = WebhookEvent.objects.get()
    assert webhook_event_process(event_id=event.id) == "processed"
    assert {row.key for row in entitlement_list(customer="QYR5Z8XDVJNXQ")} == {"pro", "reports"}
