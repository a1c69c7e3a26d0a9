"""Paddle deliveries through Django: the endpoint answers, stores once, and fulfilment converges."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from paddle_billing.Notifications import PaddleSignature

from fulfillment.models import Entitlement
from fulfillment.selectors import entitlement_list
from fulfillment.services import catalog_import
from providers import scheme_get
from providers.paddle import samples
from tests.conftest import post_json
from webhooks import endpoints
from webhooks.models import WebhookEvent
from webhooks.processing import webhook_event_process

pytestmark = pytest.mark.django_db

SECRET = "pdl_ntfset_01hs0t3tw21j988db1pam5xg8m_GrOWLNef+vmtjJYq4mSnHNzvc8uWoJ1I"
NEW_SECRET = "pdl_ntfset_01jabcdefghjkmnpqrstvwxyz0_NewSecretAfterRotation0123456"
URL = "/webhooks/paddle/"
PRICE_ADDON = "pri_01h1vjfevh5etwq3rb416a23h2"
CATALOG = {
    "products": [
        {"provider": "paddle", "price_id": samples.SAMPLE_PRICE_ID, "entitlements": ["pro", "reports"]},
        {"provider": "paddle", "price_id": PRICE_ADDON, "entitlements": ["analytics"]},
    ]
}
T = datetime.now(UTC) - timedelta(hours=1)  # recent: billing periods must not have ended


@pytest.fixture
def endpoint(db):
    return endpoints.webhook_endpoint_create(slug="paddle", scheme="paddle", secret=SECRET)


@pytest.fixture
def catalog(db):
    catalog_import(data=CATALOG)


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", email="alice@example.com")


def _header(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict:
    """Signed by Paddle's official SDK, not by our own sign()."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    h1 = PaddleSignature.calculate_hmac(secret, f"{timestamp}:".encode() + body).hexdigest()
    return {"Paddle-Signature": f"ts={timestamp};h1={h1}"}


def _post(client, event: dict, **signing):
    body = json.dumps(event).encode()
    return post_json(client, URL, body, _header(body, **signing))


def _event(event_type: str, *, at: datetime, user=None, **data) -> dict:
    event = samples.paddle_trigger_event(event_type)
    event["occurred_at"] = samples.rfc3339(at)
    if user is not None:
        event["data"]["custom_data"] = {"user_id": str(user.pk)}
    event["data"].update(data)
    return event


def _deliver(client, event: dict) -> str | None:
    response = _post(client, event)
    assert response.status_code == 200, response.content
    return webhook_event_process(event_id=response.json()["event_id"])


def _active_keys(**filters) -> set[str]:
    return {row.key for row in entitlement_list(**filters)}


# --- The endpoint -------------------------------------------------------------------------------------


def test_a_delivery_is_accepted_then_a_redelivery_is_a_duplicate(client, endpoint):
    event = _event("transaction.completed", at=T)

    first = _post(client, event)
    again = _post(client, event)

    assert first.status_code == 200 and first.json()["status"] == "accepted"
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    stored = WebhookEvent.objects.get()
    assert stored.idempotency_key == f"paddle:{event['event_id']}"
    assert stored.event_type == "transaction.completed"


def test_a_replayed_notification_of_the_same_event_is_a_duplicate_not_a_conflict(client, endpoint):
    event = _event("transaction.completed", at=T)
    _post(client, event)

    replay = _post(client, {**event, "notification_id": samples.paddle_id("ntf_")})

    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"


def test_the_same_event_id_with_other_content_is_a_conflict(client, endpoint):
    event = _event("transaction.completed", at=T)
    _post(client, event)
    event["data"]["details"]["totals"]["total"] = "1"

    assert _post(client, event).status_code == 409


def test_a_tampered_body_is_refused_and_nothing_is_stored(client, endpoint):
    body = json.dumps(_event("transaction.completed", at=T)).encode()
    headers = _header(body)

    response = post_json(client, URL, body.replace(b"32662", b"00001"), headers)

    assert response.status_code == 400 and response.json() == {"error": "invalid_signature"}
    assert not WebhookEvent.objects.exists()


def test_a_stale_timestamp_is_refused(client, endpoint):
    response = _post(client, _event("transaction.completed", at=T), timestamp=int(time.time()) - 3600)

    assert response.status_code == 400 and response.json() == {"error": "timestamp_out_of_tolerance"}


def test_a_missing_header_and_a_hostile_one_are_refused(client, endpoint):
    body = json.dumps(_event("transaction.completed", at=T)).encode()
    hostile = f"ts={int(time.time())};" + ";".join(f"h1={i:064x}" for i in range(400))

    assert post_json(client, URL, body, {}).json() == {"error": "missing_signature"}
    response = post_json(client, URL, body, {"Paddle-Signature": hostile})
    assert response.status_code == 400 and response.json() == {"error": "malformed_signature"}
    assert not WebhookEvent.objects.exists()


def test_after_a_rotation_both_secrets_verify(client, endpoint):
    endpoints.endpoint_secret_add(endpoint=endpoint, secret=NEW_SECRET, actor="system", source="test")

    old = _post(client, _event("transaction.completed", at=T))
    new = _post(client, _event("transaction.completed", at=T), secret=NEW_SECRET)

    assert old.json()["status"] == new.json()["status"] == "accepted"


# --- Fulfilment ----------------------------------------------------------------------------------------


def test_a_completed_transaction_grants_the_catalog_entitlements_to_the_user_in_custom_data(client, endpoint, catalog, alice):
    status = _deliver(client, _event("transaction.completed", at=T, user=alice))

    assert status == "processed"
    assert _active_keys(user_id=alice.id) == {"pro", "reports"}
    assert _active_keys(customer="ctm_01hv6y1jedq4p1n0yqn5ba3ky4") == {"pro", "reports"}


def test_paid_then_completed_then_subscription_created_grant_once(client, endpoint, catalog, alice):
    paid = _deliver(client, _event("transaction.paid", at=T, user=alice))
    _deliver(client, _event("transaction.completed", at=T + timedelta(seconds=2), user=alice))
    _deliver(client, _event("subscription.created", at=T + timedelta(seconds=3), user=alice))

    assert paid == "ignored"
    assert _active_keys(user_id=alice.id) == {"pro", "reports"}
    assert Entitlement.objects.count() == 2  # one row per key, under the subscription


def test_a_full_refund_revokes_what_that_transaction_granted(client, endpoint, catalog, alice):
    _deliver(client, _event("transaction.completed", at=T, user=alice, subscription_id=None))
    _deliver(client, _event("transaction.completed", at=T, user=alice, id="txn_01jaddonaddonaddonaddonaddon", subscription_id=None,
                            items=[{"price": {"id": PRICE_ADDON}, "quantity": 1}]))

    _deliver(client, _event("adjustment.updated", at=T + timedelta(minutes=5)))

    assert _active_keys(user_id=alice.id) == {"analytics"}


def test_a_refund_pending_approval_keeps_access(client, endpoint, catalog, alice):
    _deliver(client, _event("transaction.completed", at=T, user=alice))

    assert _deliver(client, _event("adjustment.created", at=T + timedelta(minutes=5), status="pending_approval")) == "ignored"
    assert _active_keys(user_id=alice.id) == {"pro", "reports"}


def test_a_refund_that_arrives_before_its_payment_leaves_nothing_granted(client, endpoint, catalog, alice):
    _deliver(client, _event("adjustment.updated", at=T + timedelta(minutes=5)))
    _deliver(client, _event("transaction.completed", at=T, user=alice))

    assert _active_keys(user_id=alice.id) == set()
    assert set(Entitlement.objects.values_list("revoke_reason", flat=True)) == {"refunded"}


def test_a_chargeback_revokes_what_that_transaction_granted(client, endpoint, catalog, alice):
    _deliver(client, _event("transaction.completed", at=T, user=alice))

    _deliver(client, _event("adjustment.created", at=T + timedelta(minutes=5), action="chargeback", reason="fraud"))

    assert _active_keys(user_id=alice.id) == set()
    assert set(Entitlement.objects.values_list("revoke_reason", flat=True)) == {"disputed"}


def test_a_canceled_subscription_revokes_and_an_older_activation_does_not_undo_it(client, endpoint, catalog, alice):
    _deliver(client, _event("subscription.created", at=T, user=alice))
    _deliver(client, _event("subscription.canceled", at=T + timedelta(minutes=5), user=alice))
    _deliver(client, _event("subscription.updated", at=T + timedelta(minutes=1), user=alice))

    assert _active_keys(user_id=alice.id) == set()


def test_a_failed_renewal_is_processed_and_keeps_access(client, endpoint, catalog, alice):
    _deliver(client, _event("transaction.completed", at=T, user=alice))

    assert _deliver(client, _event("transaction.payment_failed", at=T + timedelta(minutes=5), user=alice)) == "processed"
    assert _active_keys(user_id=alice.id) == {"pro", "reports"}


def test_the_sample_payment_fulfils_against_the_documented_price(client, endpoint, catalog):
    body, event_id = scheme_get("paddle").sample("transaction.completed", mode="live")
    headers = scheme_get("paddle").sign(secret=SECRET, body=body, timestamp=int(time.time()), event_id=event_id)

    response = post_json(client, URL, body, headers)

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert webhook_event_process(event_id=response.json()["event_id"]) == "processed"
    assert _active_keys(customer="ctm_01hv6y1jedq4p1n0yqn5ba3ky4") == {"pro", "reports"}
