"""The Stripe adapter maps each fulfilled event type to canonical facts, in both API shapes."""

import json
from datetime import UTC, datetime

import pytest

from canonical.envelope import known_types
from canonical.facts import email_hash
from config import encryption
from providers.stripe.facts import stripe_facts
from tests.fulfillment import stripe_events as se

T = 1_780_000_000


def test_paid_checkout_is_a_payment_with_the_buyer_hashed_and_encrypted():
    event = se.checkout_completed(session_id="cs_1", created=T, price_id="price_pro", user_id=7,
                                  email="Alice@Example.com", payment_intent="pi_1")

    [fact] = stripe_facts(event)

    assert fact.type == "payhook.payment.succeeded.v1"
    assert fact.data["price_ids"] == ["price_pro"]
    assert fact.data["payment_intent"] == "pi_1"
    assert fact.data["buyer"]["user_id"] == "7"
    assert fact.data["buyer"]["email_hash"] == email_hash("alice@example.com")
    assert encryption.decrypt(fact.data["buyer"]["email_encrypted"].encode()) == b"Alice@Example.com"
    assert "Alice@Example.com" not in json.dumps(fact.data)
    assert fact.time.timestamp() == T


def test_checkout_prices_come_from_line_items_when_the_payload_has_them():
    event = se.checkout_completed(session_id="cs_1", created=T, price_id="price_li", line_items=True)

    assert stripe_facts(event)[0].data["price_ids"] == ["price_li"]


def test_checkout_metadata_may_list_several_prices():
    event = se.checkout_completed(session_id="cs_1", created=T, price_id="x")
    event["data"]["object"]["metadata"] = {"price_ids": "price_a, price_b"}

    assert stripe_facts(event)[0].data["price_ids"] == ["price_a", "price_b"]


def test_unpaid_checkout_has_no_facts():
    event = se.checkout_completed(session_id="cs_1", created=T, price_id="p", payment_status="unpaid")

    assert stripe_facts(event) == []


@pytest.mark.parametrize("shape", ["current", "legacy"])
def test_invoice_paid_finds_subscription_price_and_payment_intent_in_both_shapes(shape):
    event = se.invoice(event_type="invoice.paid", invoice_id="in_1", created=T, customer="cus_1", price_id="price_pro",
                       subscription="sub_1", payment_intent="pi_9", period_end=T + 99, shape=shape)

    [fact] = stripe_facts(event)

    assert fact.type == "payhook.payment.succeeded.v1"
    assert (fact.data["subscription"], fact.data["payment_intent"], fact.data["price_ids"]) == ("sub_1", "pi_9", ["price_pro"])
    assert fact.data["access_until"].startswith("2026-")
    assert fact.data["buyer"]["provider_customer_id"] == "cus_1"


@pytest.mark.parametrize("shape", ["current", "legacy"])
@pytest.mark.parametrize(
    ("event_type", "status", "expected"),
    [
        ("customer.subscription.created", "active", "payhook.subscription.activated.v1"),
        ("customer.subscription.updated", "trialing", "payhook.subscription.activated.v1"),
        ("customer.subscription.updated", "unpaid", "payhook.subscription.canceled.v1"),
        ("customer.subscription.deleted", "canceled", "payhook.subscription.canceled.v1"),
    ],
)
def test_subscription_events_map_by_status(shape, event_type, status, expected):
    event = se.subscription(event_type=event_type, subscription_id="sub_1", created=T, customer="cus_1",
                            price_id="price_pro", status=status, period_end=T + 500, shape=shape)

    [fact] = stripe_facts(event)

    assert fact.type == expected
    assert fact.data["price_ids"] == ["price_pro"]
    if expected.endswith("activated.v1"):
        assert fact.data["current_period_end"] == datetime.fromtimestamp(T + 500, UTC).isoformat()


def test_past_due_subscription_changes_nothing():
    event = se.subscription(event_type="customer.subscription.updated", subscription_id="sub_1", created=T,
                            customer="cus_1", price_id="p", status="past_due")

    assert stripe_facts(event) == []


def test_full_and_partial_refunds():
    full = stripe_facts(se.charge_refunded(charge_id="ch_1", created=T, payment_intent="pi_1"))[0]
    partial = stripe_facts(se.charge_refunded(charge_id="ch_1", created=T, payment_intent="pi_1", amount_refunded=500))[0]

    assert (full.type, full.data["full"]) == ("payhook.payment.refunded.v1", True)
    assert partial.data["full"] is False


def test_dispute_names_the_payment_it_contests():
    [fact] = stripe_facts(se.dispute_created(dispute_id="dp_1", created=T, payment_intent="pi_1", charge_id="ch_1"))

    assert (fact.type, fact.data["payment_intent"], fact.data["charge"]) == ("payhook.dispute.opened.v1", "pi_1", "ch_1")


def test_payment_failed():
    event = se.invoice(event_type="invoice.payment_failed", invoice_id="in_1", created=T, customer="cus_1", price_id="p")

    [fact] = stripe_facts(event)

    assert fact.type == "payhook.payment.failed.v1"
    assert fact.data["invoice"] == "in_1"


def test_other_event_types_have_no_facts():
    from providers.stripe import samples

    assert stripe_facts(samples.stripe_event("customer.created")) == []
    assert stripe_facts(samples.stripe_event("product.updated")) == []


def test_every_fact_type_has_a_schema():
    assert set(known_types()) == {
        "payhook.payment.succeeded.v1", "payhook.payment.refunded.v1", "payhook.payment.failed.v1",
        "payhook.subscription.activated.v1", "payhook.subscription.canceled.v1", "payhook.dispute.opened.v1",
    }


@pytest.mark.parametrize("payload", [
    {"type": ["invoice.paid"], "data": {"object": {"id": "in_1"}}},
    {"type": {"invoice": "paid"}, "data": {"object": {"id": "in_1"}}},
    {"type": "invoice.paid", "data": ["not", "an", "object"]},
])
def test_a_signed_payload_of_the_wrong_shape_has_no_facts_and_raises_nothing(payload):
    assert stripe_facts(payload) == []
