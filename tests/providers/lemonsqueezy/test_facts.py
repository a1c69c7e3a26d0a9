"""Lemon Squeezy payload -> canonical facts; every fact is checked against its JSON Schema by
building its CloudEvents envelope."""

from datetime import UTC, datetime

import pytest

from canonical.envelope import canonical_events_build
from canonical.facts import email_hash
from providers import scheme_get
from tests.providers.lemonsqueezy import events as ls

scheme = scheme_get("lemonsqueezy")
UPDATED = "2026-03-01T10:00:00.000000Z"


def _canonical(payload: dict) -> list[dict]:
    return canonical_events_build(scheme.facts(payload), idempotency_key="k", source="/webhooks/x", correlation_id="c")


def _one(payload: dict) -> dict:
    [event] = _canonical(payload)
    return event


def test_a_paid_order_is_a_payment_of_its_variant_referenced_by_the_order():
    event = _one(ls.order(order_id="1001", variant_id=101, user_id=42, customer_id=77, updated_at=UPDATED))

    assert event["type"] == "payhook.payment.succeeded.v1"
    assert event["time"] == datetime(2026, 3, 1, 10, tzinfo=UTC).isoformat()
    assert event["subject"] == "order:1001"
    data = event["data"]
    assert data["payment_intent"] == data["source_object"] == "order:1001"
    assert data["price_ids"] == ["101"]
    assert data["subscription"] is None and data["access_until"] is None
    assert (data["amount"], data["currency"]) == (1199, "usd")
    assert data["buyer"]["user_id"] == "42"
    assert data["buyer"]["provider_customer_id"] == "77"
    assert data["buyer"]["email_hash"] == email_hash("johndoe@example.com")
    assert "johndoe" not in str(data["buyer"]["email_encrypted"])


def test_without_custom_user_id_the_buyer_is_the_order_email():
    data = _one(ls.order())["data"]

    assert data["buyer"]["user_id"] is None
    assert data["buyer"]["email_hash"] == email_hash("johndoe@example.com")


@pytest.mark.parametrize("status", ["pending", "failed", "refunded"])
def test_an_order_that_is_not_paid_is_not_a_payment(status):
    assert scheme.facts(ls.order(status=status)) == []


def test_an_order_without_variant_falls_back_to_the_custom_data_price():
    payload = ls.order(variant_id=None)
    payload["meta"]["custom_data"] = {"price_id": "var_x", "price_ids": "var_y, var_x"}

    assert _one(payload)["data"]["price_ids"] == ["var_x", "var_y"]


def test_a_full_order_refund_revokes_the_same_order_reference():
    event = _one(ls.order("order_refunded", order_id="1001", status="refunded", refunded_amount=1199))

    assert event["type"] == "payhook.payment.refunded.v1"
    assert event["data"]["payment_intent"] == "order:1001"
    assert event["data"]["full"] is True
    assert (event["data"]["amount"], event["data"]["amount_refunded"]) == (1199, 1199)


def test_a_partial_order_refund_is_not_full():
    event = _one(ls.order("order_refunded", status="partial_refund", refunded_amount=100))

    assert event["data"]["full"] is False
    assert event["data"]["amount_refunded"] == 100


def test_an_old_refund_payload_without_refunded_amount_is_full_by_its_status():
    payload = ls.order("order_refunded", status="refunded")
    del payload["data"]["attributes"]["refunded_amount"]

    assert _one(payload)["data"]["amount_refunded"] == 1199


@pytest.mark.parametrize("event_name", ["subscription_created", "subscription_updated", "subscription_resumed",
                                        "subscription_unpaused", "subscription_plan_changed"])
def test_an_active_subscription_is_activated_until_it_renews(event_name):
    event = _one(ls.subscription(event_name, subscription_id="501", variant_id=202, renews_at="2026-04-01T00:00:00.000000Z",
                                 updated_at=UPDATED, user_id=42))

    assert event["type"] == "payhook.subscription.activated.v1"
    assert event["subject"] == "501"
    assert event["data"]["subscription"] == "501"
    assert event["data"]["status"] == "active"
    assert event["data"]["price_ids"] == ["202"]
    assert event["data"]["current_period_end"] == datetime(2026, 4, 1, tzinfo=UTC).isoformat()


def test_a_trial_is_activated_until_the_trial_ends():
    event = _one(ls.subscription(status="on_trial", trial_ends_at="2026-03-15T00:00:00.000000Z", updated_at=UPDATED))

    assert event["data"]["status"] == "trialing"
    assert event["data"]["current_period_end"] == datetime(2026, 3, 15, tzinfo=UTC).isoformat()


def test_a_cancelled_subscription_keeps_access_until_it_ends():
    event = _one(ls.subscription("subscription_cancelled", status="cancelled", ends_at="2026-03-20T00:00:00.000000Z",
                                 updated_at=UPDATED))

    assert event["type"] == "payhook.subscription.activated.v1"
    assert event["data"]["current_period_end"] == datetime(2026, 3, 20, tzinfo=UTC).isoformat()


def test_a_cancellation_already_past_its_end_cancels_now():
    event = _one(ls.subscription("subscription_cancelled", status="cancelled", ends_at="2026-02-20T00:00:00.000000Z",
                                 updated_at=UPDATED))

    assert event["type"] == "payhook.subscription.canceled.v1"
    assert event["data"]["status"] == "canceled"


@pytest.mark.parametrize(("event_name", "status", "canonical_status"), [
    ("subscription_expired", "expired", "canceled"),
    ("subscription_expired", "cancelled", "canceled"),
    ("subscription_updated", "expired", "canceled"),
    ("subscription_updated", "unpaid", "unpaid"),
    ("subscription_paused", "paused", "paused"),
])
def test_an_ended_subscription_is_canceled_in_the_canonical_vocabulary(event_name, status, canonical_status):
    event = _one(ls.subscription(event_name, status=status, ends_at="2026-03-20T00:00:00.000000Z", updated_at=UPDATED,
                                 pause={"mode": "void", "resumes_at": None} if status == "paused" else None))

    assert event["type"] == "payhook.subscription.canceled.v1"
    assert event["data"]["status"] == canonical_status
    assert event["data"]["price_ids"] == ["202"]


def test_a_free_pause_and_past_due_leave_access_unchanged():
    assert scheme.facts(ls.subscription("subscription_paused", status="paused", pause={"mode": "free", "resumes_at": None})) == []
    assert scheme.facts(ls.subscription("subscription_updated", status="past_due")) == []


def test_a_failed_subscription_payment_is_a_failed_payment_of_its_invoice():
    event = _one(ls.invoice("subscription_payment_failed", invoice_id="9001", subscription_id=501, status="pending"))

    assert event["type"] == "payhook.payment.failed.v1"
    assert event["data"]["invoice"] == event["data"]["payment_intent"] == "subscription-invoice:9001"
    assert event["data"]["subscription"] == "501"
    assert (event["data"]["amount"], event["data"]["currency"]) == (999, "usd")


def test_a_subscription_payment_naming_its_price_is_a_payment_of_the_invoice():
    event = _one(ls.invoice(invoice_id="9001", subscription_id=501, custom_data={"price_id": "202", "user_id": "42"}))

    assert event["type"] == "payhook.payment.succeeded.v1"
    assert event["data"]["payment_intent"] == "subscription-invoice:9001"
    assert event["data"]["subscription"] == "501"
    assert event["data"]["price_ids"] == ["202"]
    assert event["data"]["buyer"]["user_id"] == "42"


def test_a_subscription_payment_without_a_price_is_left_to_the_subscription_events():
    # Lemon Squeezy's subscription invoice names no variant; subscription_updated carries the access.
    assert scheme.facts(ls.invoice()) == []


def test_a_refunded_subscription_payment_revokes_what_that_invoice_granted():
    event = _one(ls.invoice("subscription_payment_refunded", invoice_id="9001", status="refunded", refunded_amount=999))

    assert event["type"] == "payhook.payment.refunded.v1"
    assert event["data"]["payment_intent"] == "subscription-invoice:9001"
    assert event["data"]["full"] is True


@pytest.mark.parametrize("event_name", ["license_key_created", "license_key_updated", "affiliate_activated",
                                        "customer_updated", "subscription_payment_recovered", "order_refunded_x"])
def test_event_types_payhook_does_not_fulfil_have_no_facts(event_name):
    assert scheme.facts(ls.order(event_name)) == []


def test_an_event_whose_object_type_does_not_match_its_name_has_no_facts():
    payload = ls.order()
    payload["data"]["type"] = "subscriptions"
    assert scheme.facts(payload) == []
    assert scheme.facts(ls.subscription("order_created")) == []


def test_every_sample_event_builds_valid_canonical_events():
    from providers.lemonsqueezy import samples

    for event_type in samples.SAMPLE_EVENT_TYPES:
        _canonical(samples.lemonsqueezy_sample_event(event_type))
    assert _one(samples.lemonsqueezy_sample_event("order_created"))["data"]["price_ids"] == [samples.SAMPLE_VARIANT_ID]
