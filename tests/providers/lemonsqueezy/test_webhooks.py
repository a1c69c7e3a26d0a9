"""Lemon Squeezy deliveries through Django: POST /webhooks/<slug>/, then processing the stored event."""

import hashlib
import hmac
import json

import pytest
from django.contrib.auth import get_user_model

from fulfillment.models import Entitlement
from fulfillment.selectors import entitlement_list
from fulfillment.services import catalog_import
from providers import scheme_get
from providers.lemonsqueezy import samples
from tests.conftest import post_json
from tests.providers.lemonsqueezy import events as ls
from webhooks.endpoints import webhook_endpoint_create
from webhooks.models import DeadLetter, WebhookEvent
from webhooks.processing import webhook_event_process
from webhooks.receiving import webhook_event_headers

pytestmark = pytest.mark.django_db

SECRET = "lemon-endpoint-secret"
SLUG = "lemon"
CATALOG = {
    "products": [
        {"provider": "lemonsqueezy", "price_id": "101", "entitlements": ["pro", "reports"]},
        {"provider": "lemonsqueezy", "price_id": "202", "entitlements": ["team"]},
        {"provider": "lemonsqueezy", "price_id": samples.SAMPLE_VARIANT_ID, "entitlements": ["sample"]},
        # The same variant id under another provider must not be what grants.
        {"provider": "stripe", "price_id": "101", "entitlements": ["stripe-only"]},
    ]
}


def lemon_squeezy_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def endpoint(db):
    catalog_import(data=CATALOG)
    return webhook_endpoint_create(slug=SLUG, scheme="lemonsqueezy", secret=SECRET)


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", email="alice@example.com")


@pytest.fixture
def post(client, endpoint):
    def post(payload, *, secret: str = SECRET, tamper: bool = False):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"X-Signature": lemon_squeezy_signature(secret, body)}
        if tamper:
            body = body.replace(b'"paid"', b'"PAID"')
        return post_json(client, f"/webhooks/{SLUG}/", body, headers)

    return post


@pytest.fixture
def deliver(post):
    """POST, then process the stored event in-process; returns (event id, final status)."""

    def deliver(payload: dict) -> tuple[str, str | None]:
        response = post(payload)
        assert response.status_code == 200, response.content
        event_id = response.json()["event_id"]
        return event_id, webhook_event_process(event_id=event_id)

    return deliver


def _active_keys(**filters) -> set[str]:
    return {row.key for row in entitlement_list(**filters)}


def test_a_signed_delivery_is_accepted_then_a_redelivery_is_a_duplicate(post):
    payload = ls.order(order_id="1001", updated_at="2026-03-01T10:00:00.000000Z")

    first = post(payload)
    again = post(payload)

    assert first.status_code == 200 and first.json()["status"] == "accepted"
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    event = WebhookEvent.objects.get()
    assert event.idempotency_key == f"{SLUG}:order_created:orders:1001:2026-03-01T10:00:00.000000Z"
    assert event.event_type == "order_created"
    assert set(webhook_event_headers(event=event)) == {"X-Signature"}


def test_the_same_order_changed_later_is_a_new_event(post):
    assert post(ls.order(order_id="1001", updated_at="2026-03-01T10:00:00.000000Z")).json()["status"] == "accepted"
    assert post(ls.order(order_id="1001", updated_at="2026-03-01T10:00:01.000000Z")).json()["status"] == "accepted"
    assert WebhookEvent.objects.count() == 2


def test_a_tampered_body_is_refused_and_nothing_is_stored(post):
    response = post(ls.order(), tamper=True)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature"}
    assert not WebhookEvent.objects.exists()


def test_another_secret_is_refused_and_a_missing_or_malformed_header_says_so(client, post, endpoint):
    body = json.dumps(ls.order()).encode()

    assert post(ls.order(), secret="not-the-secret").json() == {"error": "invalid_signature"}
    assert post_json(client, f"/webhooks/{SLUG}/", body, {}).json() == {"error": "missing_signature"}
    hostile = post_json(client, f"/webhooks/{SLUG}/", body, {"X-Signature": ",".join(["ab" * 32] * 300)})
    assert (hostile.status_code, hostile.json()) == (400, {"error": "malformed_signature"})
    assert not WebhookEvent.objects.exists()


def test_a_verified_body_without_updated_at_is_an_invalid_payload(post):
    payload = ls.order()
    del payload["data"]["attributes"]["updated_at"]

    response = post(payload)

    assert (response.status_code, response.json()) == (400, {"error": "invalid_payload"})
    assert not WebhookEvent.objects.exists()


def test_a_paid_order_grants_the_variants_entitlements_to_the_custom_data_user(deliver, alice):
    _, status = deliver(ls.order(order_id="1001", variant_id=101, user_id=alice.id, customer_id=77))

    assert status == "processed"
    assert _active_keys(user_id=alice.id) == {"pro", "reports"}
    assert _active_keys(customer="77") == {"pro", "reports"}
    assert Entitlement.objects.get(key="pro").payment_intent == "order:1001"


def test_without_a_user_id_the_buyer_is_found_by_email(deliver, alice):
    deliver(ls.order(variant_id=101, email="ALICE@example.com"))

    assert _active_keys(user_id=alice.id) == {"pro", "reports"}


def test_a_full_refund_revokes_what_that_order_granted_only(deliver, alice):
    deliver(ls.order(order_id="1001", variant_id=101, user_id=alice.id, updated_at=ls.at(-3600)))
    deliver(ls.order(order_id="1002", variant_id=202, user_id=alice.id, updated_at=ls.at(-3500)))

    deliver(ls.order("order_refunded", order_id="1001", variant_id=101, user_id=alice.id, status="refunded",
                     refunded_amount=1199, updated_at=ls.at(-60)))

    assert _active_keys(user_id=alice.id) == {"team"}


def test_a_refund_that_arrives_before_its_payment_leaves_nothing_granted(deliver, alice):
    deliver(ls.order("order_refunded", order_id="1001", variant_id=101, user_id=alice.id, status="refunded",
                     refunded_amount=1199, updated_at=ls.at(-60)))
    _, status = deliver(ls.order(order_id="1001", variant_id=101, user_id=alice.id, updated_at=ls.at(-3600)))

    assert status == "processed"
    assert _active_keys(user_id=alice.id) == set()
    assert {row.revoke_reason for row in Entitlement.objects.all()} == {"refunded"}


def test_a_subscription_grants_until_it_renews_and_its_expiry_revokes(deliver, alice):
    renews_at = ls.at(30 * 86400)
    deliver(ls.subscription(subscription_id="501", variant_id=202, user_id=alice.id, renews_at=renews_at,
                            updated_at=ls.at(-3600)))
    assert _active_keys(user_id=alice.id) == {"team"}
    assert Entitlement.objects.get().expires_at.isoformat().startswith(renews_at[:19])

    deliver(ls.subscription("subscription_expired", subscription_id="501", variant_id=202, user_id=alice.id,
                            status="expired", ends_at=ls.at(-60), updated_at=ls.at(-60)))

    assert _active_keys(user_id=alice.id) == set()


def test_a_cancelled_subscription_keeps_access_until_ends_at(deliver, alice):
    deliver(ls.subscription(subscription_id="501", variant_id=202, user_id=alice.id, updated_at=ls.at(-3600)))
    ends_at = ls.at(5 * 86400)

    deliver(ls.subscription("subscription_cancelled", subscription_id="501", variant_id=202, user_id=alice.id,
                            status="cancelled", ends_at=ends_at, updated_at=ls.at(-60)))

    assert _active_keys(user_id=alice.id) == {"team"}
    assert Entitlement.objects.get().expires_at.isoformat().startswith(ends_at[:19])


def test_an_expiry_that_arrives_before_the_creation_stays_expired(deliver, alice):
    common = {"subscription_id": "501", "variant_id": 202, "user_id": alice.id}
    deliver(ls.subscription("subscription_expired", status="expired", ends_at=ls.at(-60), updated_at=ls.at(-60), **common))
    deliver(ls.subscription("subscription_created", updated_at=ls.at(-3600), **common))

    assert _active_keys(user_id=alice.id) == set()


def test_a_failed_subscription_payment_is_processed_and_access_unchanged(deliver, alice):
    deliver(ls.subscription(subscription_id="501", variant_id=202, user_id=alice.id, updated_at=ls.at(-3600)))

    _, status = deliver(ls.invoice("subscription_payment_failed", subscription_id=501, status="pending",
                                   custom_data={"user_id": str(alice.id)}, updated_at=ls.at(-60)))

    assert status == "processed"
    assert _active_keys(user_id=alice.id) == {"team"}


def test_unfulfilled_events_are_stored_and_ignored(deliver):
    _, status = deliver(ls.order("license_key_created"))

    assert status == "ignored"


def test_a_variant_missing_from_the_catalog_dead_letters_the_event(deliver, alice):
    event_id, status = deliver(ls.order(variant_id=999, user_id=alice.id))

    assert status == "dead"
    letter = DeadLetter.objects.get(event_id=event_id)
    assert "999" in letter.error_message
    assert letter.error_type == "PriceNotInCatalog"


def test_a_test_mode_event_on_a_live_endpoint_is_ignored(deliver, alice):
    _, status = deliver(ls.order(variant_id=101, user_id=alice.id, test_mode=True))

    assert status == "ignored"
    assert _active_keys(user_id=alice.id) == set()


def test_the_order_created_sample_signed_by_our_signer_fulfils_the_sample_variant(client, endpoint):
    scheme = scheme_get("lemonsqueezy")
    body, event_id = scheme.sample("order_created", mode="live")
    headers = scheme.sign(secret=SECRET, body=body, timestamp=0, event_id=event_id)

    response = post_json(client, f"/webhooks/{SLUG}/", body, headers)

    assert response.status_code == 200
    assert webhook_event_process(event_id=response.json()["event_id"]) == "processed"
    assert WebhookEvent.objects.get().provider_event_id == event_id
    assert _active_keys(customer="1") == {"sample"}


def test_an_endpoint_is_created_from_the_command_line_and_a_blank_secret_refused(client):
    from io import StringIO

    from django.core.management import CommandError, call_command

    call_command("webhook_endpoint", "create", "ls-cli", "--scheme", "lemonsqueezy", "--secret", "cli-secret", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("webhook_endpoint", "create", "ls-blank", "--scheme", "lemonsqueezy", "--secret", "   ", stdout=StringIO())

    body = json.dumps(ls.order()).encode()
    response = post_json(client, "/webhooks/ls-cli/", body, {"X-Signature": lemon_squeezy_signature("cli-secret", body)})
    assert response.json()["status"] == "accepted"
