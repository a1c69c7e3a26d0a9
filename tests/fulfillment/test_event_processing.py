"""Processing a stored Stripe event: entitlements converge whatever the delivery order."""

import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditChainHead, AuditEntry
from fulfillment.models import Customer, Entitlement
from fulfillment.selectors import entitlement_list
from tests.conftest import signed_headers
from tests.fulfillment import stripe_events as se
from webhooks.models import WebhookEvent
from webhooks.processing import webhook_event_process
from webhooks.receiving import webhook_event_receive

T = int(time.time()) - 3600  # recent: subscription periods must not have ended
pytestmark = pytest.mark.django_db


def _active_keys(**filters) -> set[str]:
    return {row.key for row in entitlement_list(**filters)}


def test_paid_checkout_grants_the_catalog_entitlements_to_the_referenced_user(catalog, alice, deliver):
    _, status = deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=alice.id,
                                              customer="cus_A", payment_intent="pi_1"))

    assert status == "processed"
    assert _active_keys(user_id=alice.id) == {"pro", "reports"}
    assert _active_keys(customer="cus_A") == {"pro", "reports"}


def test_a_grant_audits_its_empty_reason_and_a_subscription_row_its_missing_payment_as_null_not_as_dropped(catalog, alice, deliver):
    deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=alice.id,
                                  customer="cus_A", payment_intent="pi_1"))
    deliver(se.subscription(event_type="customer.subscription.created", subscription_id="sub_1", created=T,
                            customer="cus_A", price_id="price_pro", status="active", user_id=alice.id))

    granted = [entry.data for entry in AuditEntry.objects.filter(action="entitlement.granted")]
    assert granted and all(data["reason"] is None for data in granted)
    assert "[dropped]" not in json.dumps(granted)


def test_buyer_is_found_by_email_case_insensitively(catalog, alice, deliver):
    deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_addon", email="ALICE@example.COM",
                                  payment_intent="pi_1"))

    assert _active_keys(user_id=alice.id) == {"addon"}


def test_guest_entitlements_move_to_the_user_when_one_is_linked(catalog, deliver, django_user_model):
    from fulfillment.services import customers_link_user

    deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_addon", email="guest@example.com",
                                  payment_intent="pi_1"))
    assert Customer.objects.get().user is None
    user = django_user_model.objects.create_user("guest", email="Guest@example.com")

    assert customers_link_user(user=user) == 1
    assert _active_keys(user_id=user.id) == {"addon"}


def test_redelivery_and_replay_never_grant_twice(catalog, alice, deliver):
    event = se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=alice.id, payment_intent="pi_1")
    event_id, _ = deliver(event)
    deliver(event)
    WebhookEvent.objects.filter(id=event_id).update(status="received")  # an operator replay
    assert webhook_event_process(event_id=event_id) == "processed"

    assert Entitlement.objects.count() == 2


def test_full_refund_revokes_only_what_that_payment_granted(catalog, alice, deliver):
    deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=alice.id, payment_intent="pi_1"))
    deliver(se.checkout_completed(session_id="cs_2", created=T + 1, price_id="price_addon", user_id=alice.id, payment_intent="pi_2"))

    deliver(se.charge_refunded(charge_id="ch_2", created=T + 2, payment_intent="pi_2"))

    assert _active_keys(user_id=alice.id) == {"pro", "reports"}


def test_partial_refund_keeps_access(catalog, alice, deliver):
    deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_addon", user_id=alice.id, payment_intent="pi_1"))
    deliver(se.charge_refunded(charge_id="ch_1", created=T + 2, payment_intent="pi_1", amount_refunded=100))

    assert _active_keys(user_id=alice.id) == {"addon"}


def test_refund_that_arrives_before_its_payment_is_not_undone_by_the_late_grant(catalog, alice, deliver):
    deliver(se.charge_refunded(charge_id="ch_1", created=T + 10, payment_intent="pi_1"))
    deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_addon", user_id=alice.id, payment_intent="pi_1"))

    assert _active_keys(user_id=alice.id) == set()
    assert Entitlement.objects.get().revoke_reason == "refunded"


def test_dispute_revokes_the_disputed_payment(catalog, alice, deliver):
    deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_export", user_id=alice.id, payment_intent="pi_1"))
    deliver(se.dispute_created(dispute_id="dp_1", created=T + 5, payment_intent="pi_1", charge_id="ch_1"))

    assert _active_keys(user_id=alice.id) == set()


def test_subscription_canceled_before_its_created_event_stays_canceled(catalog, alice, deliver):
    common = {"subscription_id": "sub_1", "customer": "cus_A", "price_id": "price_pro", "user_id": alice.id}
    deliver(se.subscription(event_type="customer.subscription.deleted", created=T + 100, status="canceled", **common))
    deliver(se.subscription(event_type="customer.subscription.created", created=T, **common))
    deliver(se.invoice(event_type="invoice.paid", invoice_id="in_1", created=T + 1, customer="cus_A", price_id="price_pro",
                       subscription="sub_1", payment_intent="pi_1"))

    assert _active_keys(user_id=alice.id) == set()


def test_older_subscription_update_never_overwrites_a_newer_one(catalog, alice, deliver):
    common = {"subscription_id": "sub_1", "customer": "cus_A", "user_id": alice.id}
    deliver(se.subscription(event_type="customer.subscription.updated", created=T + 50, price_id="price_addon", **common))
    deliver(se.subscription(event_type="customer.subscription.updated", created=T + 10, price_id="price_pro", **common))

    assert _active_keys(user_id=alice.id) == {"addon"}


def test_subscription_grant_expires_at_the_period_end(catalog, alice, deliver):
    deliver(se.subscription(event_type="customer.subscription.created", subscription_id="sub_1", created=T, customer="cus_A",
                            price_id="price_pro", user_id=alice.id, period_end=T + 7200))

    row = Entitlement.objects.get(key="pro")
    assert row.expires_at.timestamp() == T + 7200


def test_price_missing_from_the_catalog_dead_letters_the_event_saying_so(catalog, alice, deliver):
    from webhooks.models import DeadLetter

    event_id, status = deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_unknown",
                                                     user_id=alice.id, payment_intent="pi_1"))

    assert status == "dead"
    letter = DeadLetter.objects.get(event_id=event_id)
    assert "price_unknown" in letter.error_message
    assert letter.error_type == "PriceNotInCatalog"


def test_unfulfilled_event_types_are_ignored(catalog, deliver):
    from providers.stripe import samples

    _, status = deliver(samples.stripe_event("customer.created"))

    assert status == "ignored"


def test_events_api_detail_shows_the_canonical_events_without_personal_data(catalog, alice, deliver, client, django_user_model):
    from django.contrib.auth.models import Group

    from tests.accounts.factories import token_key_for

    event_id, _ = deliver(se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=alice.id,
                                                customer="cus_A", payment_intent="pi_1", email="alice@example.com"))
    operator = django_user_model.objects.create_user("op")
    operator.groups.add(Group.objects.get(name="operators"))
    token = token_key_for(operator)

    response = client.get(f"/api/v1/events/{event_id}/", HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 200
    [canonical] = response.json()["canonical_events"]
    assert canonical["specversion"] == "1.0"
    assert canonical["type"] == "payhook.payment.succeeded.v1"
    assert canonical["source"] == "/webhooks/stripe"
    assert canonical["idempotencykey"] == response.json()["idempotency_key"]
    assert canonical["correlationid"] == event_id
    assert canonical["data"]["price_ids"] == ["price_pro"]
    assert "alice@example.com" not in response.content.decode()


@pytest.mark.parametrize("refund_first", [False, True])
def test_a_refund_and_its_payment_of_the_same_second_end_revoked_in_either_order(catalog, alice, deliver, refund_first):
    payment = se.checkout_completed(session_id="cs_1", created=T, price_id="price_addon", user_id=alice.id, payment_intent="pi_1")
    refund = se.charge_refunded(charge_id="ch_1", created=T, payment_intent="pi_1")
    for event in (refund, payment) if refund_first else (payment, refund):
        deliver(event)
    deliver(payment)  # a redelivery changes nothing either

    assert _active_keys(user_id=alice.id) == set()
    assert Entitlement.objects.get().revoke_reason == "refunded"


@pytest.mark.parametrize("checkout_first", [False, True])
def test_a_checkout_and_its_subscription_of_the_same_second_merge_in_either_order(catalog, alice, deliver, checkout_first):
    checkout = se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=alice.id, customer="cus_A",
                                     subscription="sub_1")
    created = se.subscription(event_type="customer.subscription.created", subscription_id="sub_1", created=T, customer="cus_A",
                              price_id="price_pro", user_id=alice.id, period_end=T + 7200)
    for event in (checkout, created) if checkout_first else (created, checkout):
        deliver(event)

    assert _active_keys(user_id=alice.id) == {"pro", "reports"}
    assert {row.expires_at.timestamp() for row in Entitlement.objects.all()} == {T + 7200}


def test_an_event_s_audit_entries_are_written_together_after_its_other_effects(catalog, alice, stripe_endpoint, stripe_secret):
    body = json.dumps(se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=alice.id,
                                            payment_intent="pi_1")).encode()
    event_id = webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", stripe_secret, body)).event_id
    with CaptureQueriesContext(connection) as queries:
        assert webhook_event_process(event_id=event_id) == "processed"

    sql = [query["sql"] for query in queries.captured_queries]
    head, entries = AuditChainHead._meta.db_table, AuditEntry._meta.db_table
    locks = [i for i, statement in enumerate(sql) if head in statement and "FOR UPDATE" in statement]
    inserts = [i for i, statement in enumerate(sql) if statement.startswith(f'INSERT INTO "{entries}"')]
    assert len(locks) == 1 and len(inserts) == 1  # the chain head locked once, every entry in one INSERT
    assert locks[0] > max(i for i, statement in enumerate(sql) if "notifications_notification" in statement)
    assert AuditEntry.objects.count() >= 4  # received, granted ×2, in-app notification sent
