"""Paddle payloads -> canonical facts, each validated by building its canonical envelope."""

import copy

import pytest

from canonical.envelope import canonical_events_build
from providers import scheme_get
from providers.paddle import samples

scheme = scheme_get("paddle")
OCCURRED_AT = "2026-01-01T00:00:00.123456Z"


def _event(event_type: str, **data) -> dict:
    event = samples.paddle_trigger_event(event_type)
    event["occurred_at"] = OCCURRED_AT
    event["data"].update(data)
    return event


def _canonical(event: dict) -> list[dict]:
    """The canonical events; building them validates each fact's data against its JSON Schema."""
    return canonical_events_build(scheme.facts(event), idempotency_key="k", source="/webhooks/x", correlation_id="c")


def test_a_completed_transaction_is_a_payment_referenced_by_its_transaction_id():
    event = _event("transaction.completed", custom_data={"user_id": "42"})

    [canonical] = _canonical(event)

    txn = event["data"]
    assert canonical["type"] == "payhook.payment.succeeded.v1"
    assert canonical["subject"] == txn["id"]
    assert canonical["time"] == "2026-01-01T00:00:00.123456+00:00"
    data = canonical["data"]
    assert data["payment_intent"] == data["source_object"] == txn["id"]
    assert data["subscription"] == txn["subscription_id"]
    assert data["price_ids"] == [samples.SAMPLE_PRICE_ID]
    assert data["amount"] == 32662 and data["currency"] == "usd"
    assert data["access_until"] == txn["billing_period"]["ends_at"].replace("Z", "+00:00")
    assert data["buyer"]["user_id"] == "42"
    assert data["buyer"]["provider_customer_id"] == "ctm_01hv6y1jedq4p1n0yqn5ba3ky4"


def test_a_one_time_transaction_has_no_subscription_and_no_access_end():
    [canonical] = _canonical(_event("transaction.completed", subscription_id=None))

    assert canonical["data"]["subscription"] is None and canonical["data"]["access_until"] is None


def test_every_item_price_is_named_once():
    event = _event("transaction.completed")
    items = event["data"]["items"]
    items += [copy.deepcopy(items[0]), {"price": {"id": "pri_addon"}, "quantity": 1}, {"price_id": "pri_older_shape"}]

    [canonical] = _canonical(event)

    assert canonical["data"]["price_ids"] == [samples.SAMPLE_PRICE_ID, "pri_addon", "pri_older_shape"]


@pytest.mark.parametrize("total", ["12.50", "-5", "", None, "1e3", "１２"])
def test_an_amount_that_is_not_minor_units_is_null_not_an_error(total):
    event = _event("transaction.completed")
    event["data"]["details"]["totals"]["total"] = total

    [canonical] = _canonical(event)

    assert canonical["data"]["amount"] is None


def test_transaction_paid_is_ignored_because_completed_follows_for_the_same_transaction():
    assert scheme.facts(_event("transaction.paid")) == []


def test_a_failed_renewal_payment_is_a_payment_failure():
    [canonical] = _canonical(_event("transaction.payment_failed", custom_data={"user_id": "7"}))

    assert canonical["type"] == "payhook.payment.failed.v1"
    data = canonical["data"]
    assert data["payment_intent"] == data["invoice"] == canonical["subject"]
    assert data["amount"] == 32662 and data["currency"] == "usd" and data["buyer"]["user_id"] == "7"


def test_a_declined_card_inside_checkout_is_not_notified():
    assert scheme.facts(_event("transaction.payment_failed", origin="web")) == []


@pytest.mark.parametrize("event_type", ["subscription.created", "subscription.activated", "subscription.updated",
                                        "subscription.trialing", "subscription.resumed"])
def test_an_active_or_trialing_subscription_is_activated(event_type):
    [canonical] = _canonical(_event(event_type, custom_data={"user_id": "42"}))

    assert canonical["type"] == "payhook.subscription.activated.v1"
    data = canonical["data"]
    assert data["subscription"] == canonical["subject"] == "sub_01hv8x29kz0t586xy6zn1a62ny"
    assert data["status"] in ("active", "trialing")
    assert data["price_ids"] == [samples.SAMPLE_PRICE_ID]
    assert data["current_period_end"] is not None
    assert data["buyer"]["user_id"] == "42"


@pytest.mark.parametrize("status", ["canceled", "paused", "past_due"])
def test_a_canceled_paused_or_past_due_subscription_is_canceled(status):
    [canonical] = _canonical(_event("subscription.updated", status=status))

    assert canonical["type"] == "payhook.subscription.canceled.v1"
    assert canonical["data"]["status"] == status


@pytest.mark.parametrize("event_type", ["subscription.canceled", "subscription.paused", "subscription.past_due"])
def test_the_sample_of_each_ending_event_is_canceled(event_type):
    [canonical] = _canonical(_event(event_type))

    assert canonical["type"] == "payhook.subscription.canceled.v1"


@pytest.mark.parametrize("event_type", ["adjustment.created", "adjustment.updated"])
def test_an_approved_full_refund_references_the_refunded_transaction(event_type):
    [canonical] = _canonical(_event(event_type))

    assert canonical["type"] == "payhook.payment.refunded.v1"
    data = canonical["data"]
    assert data["payment_intent"] == canonical["subject"] == "txn_01hv8wptq8987qeep44cyrewp9"
    assert data["charge"] == "adj_01hvgf2s84dr6reszzg29zbvcm"
    assert data["full"] is True and data["amount_refunded"] == 32662 and data["currency"] == "usd"
    assert data["buyer"]["provider_customer_id"] == "ctm_01hv6y1jedq4p1n0yqn5ba3ky4"


def test_a_partial_refund_is_not_full():
    event = _event("adjustment.updated", type="partial")
    event["data"]["items"][0]["type"] = "partial"

    [canonical] = _canonical(event)

    assert canonical["data"]["full"] is False


@pytest.mark.parametrize("item_type, full", [("full", True), ("partial", False)])
def test_without_a_top_level_type_a_refund_is_full_when_every_item_is(item_type, full):
    event = _event("adjustment.updated", type=None)
    event["data"]["items"][0]["type"] = item_type

    [canonical] = _canonical(event)

    assert canonical["data"]["full"] is full


@pytest.mark.parametrize("status", ["pending_approval", "rejected", "reversed"])
def test_a_refund_not_approved_is_ignored(status):
    assert scheme.facts(_event("adjustment.created", status=status)) == []


def test_a_chargeback_opens_a_dispute_on_the_transaction():
    [canonical] = _canonical(_event("adjustment.created", action="chargeback", reason="fraud"))

    assert canonical["type"] == "payhook.dispute.opened.v1"
    data = canonical["data"]
    assert data["payment_intent"] == canonical["subject"] == "txn_01hv8wptq8987qeep44cyrewp9"
    assert data["dispute"] == "adj_01hvgf2s84dr6reszzg29zbvcm"
    assert data["amount"] == 32662 and data["reason"] == "fraud"


@pytest.mark.parametrize("action", ["credit", "chargeback_warning", "chargeback_reverse", "credit_reverse"])
def test_other_adjustments_are_ignored(action):
    assert scheme.facts(_event("adjustment.created", action=action)) == []


@pytest.mark.parametrize("event_type", ["transaction.created", "transaction.ready", "transaction.billed", "customer.created",
                                        "subscription.imported", "payout.paid", None])
def test_unfulfilled_types_are_ignored(event_type):
    event = _event("transaction.completed")
    event["event_type"] = event_type

    assert scheme.facts(event) == []


@pytest.mark.parametrize("data", [None, [], "txn_1", {}, {"id": 5}, {"id": ""}])
def test_a_payload_without_an_entity_id_is_ignored(data):
    event = _event("transaction.completed")
    event["data"] = data

    assert scheme.facts(event) == []
