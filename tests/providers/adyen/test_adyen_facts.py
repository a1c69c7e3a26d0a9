"""The Adyen adapter maps each fulfilled item to canonical facts that build a valid envelope."""

import json
from datetime import UTC, datetime

import pytest

from canonical.envelope import canonical_events_build
from canonical.facts import email_hash
from config import encryption
from providers import scheme_get
from providers.adyen import samples
from tests.providers.adyen import notifications as n

scheme = scheme_get("adyen")


def _facts(*items: dict, pick: int = 0):
    payload = samples.adyen_notification(*items)
    facts = scheme.facts(payload, provider_event_id=n.key_of(items[pick]))
    # Raises when a fact's data does not match its type's JSON Schema.
    canonical_events_build(facts, idempotency_key="k", source="/webhooks/x", correlation_id="c")
    return facts


def test_a_successful_authorisation_is_a_payment_of_its_metadata_price_by_its_shopper():
    item = n.item("AUTHORISATION", additional={"shopperReference": "42", "metadata.price_id": "adyen-price-pro"})

    [fact] = _facts(item)

    assert fact.type == "payhook.payment.succeeded.v1"
    assert fact.subject == "7914073381342284"
    assert fact.time == datetime(2014, 8, 6, 11, 9, 4, tzinfo=UTC)
    data = fact.data
    assert data["payment_intent"] == data["source_object"] == "7914073381342284"
    assert data["price_ids"] == ["adyen-price-pro"]
    assert (data["amount"], data["currency"]) == (1130, "eur")  # already minor units
    assert data["subscription"] is None and data["access_until"] is None
    assert data["buyer"]["user_id"] == data["buyer"]["provider_customer_id"] == "42"
    assert data["buyer"]["email_hash"] == email_hash("s.hopper@example.com")
    assert encryption.decrypt(data["buyer"]["email_encrypted"].encode()) == b"s.hopper@example.com"
    assert "s.hopper@example.com" not in json.dumps(data)


def test_without_a_shopper_reference_the_buyer_is_the_shopper_email():
    item = n.item("AUTHORISATION")
    del item["additionalData"]["shopperReference"]

    buyer = _facts(item)[0].data["buyer"]

    assert buyer["user_id"] is None and buyer["provider_customer_id"] is None
    assert buyer["email_hash"] == email_hash("s.hopper@example.com")


def test_an_authorisation_without_a_price_names_none():
    item = n.item("AUTHORISATION")
    del item["additionalData"]["metadata.price_id"]

    assert _facts(item)[0].data["price_ids"] == []


def test_a_refused_authorisation_is_a_failed_payment():
    [fact] = _facts(n.item("AUTHORISATION:false"))

    assert fact.type == "payhook.payment.failed.v1"
    assert fact.data["payment_intent"] == "7914073381342285"
    assert fact.data["invoice"] == "TestPayment-1407325143705"
    assert (fact.data["amount"], fact.data["currency"]) == (1130, "eur")


@pytest.mark.parametrize("event_code", ["REFUND", "CANCEL_OR_REFUND", "CANCELLATION"])
def test_a_successful_refund_or_cancellation_revokes_its_original_payment(event_code):
    [fact] = _facts(n.item("REFUND", eventCode=event_code))

    assert fact.type == "payhook.payment.refunded.v1"
    assert fact.subject == fact.data["payment_intent"] == "7914073381342284"
    assert fact.data["charge"] == "8515396117853457"
    assert fact.data["full"] is True
    assert fact.data["amount_refunded"] == 1130
    assert fact.time == datetime(2014, 8, 7, 8, 0, tzinfo=UTC)


def test_a_chargeback_is_a_dispute_of_its_original_payment():
    [fact] = _facts(n.item("CHARGEBACK"))

    assert fact.type == "payhook.dispute.opened.v1"
    assert fact.data == {
        "payment_intent": "7914073381342284", "charge": "7914073381342284", "dispute": "9915555555555555",
        "amount": 1130, "currency": "eur", "reason": "10.4",
    }


@pytest.mark.parametrize("name, fields", [
    ("REFUND", {"success": "false"}),
    ("CHARGEBACK", {"success": "false"}),
    ("CAPTURE", {}),
    ("RECURRING_CONTRACT", {}),
    ("AUTHORISATION", {"eventCode": "REPORT_AVAILABLE"}),
    ("AUTHORISATION", {"eventCode": "NOTIFICATION_OF_CHARGEBACK"}),
])
def test_items_payhook_does_not_fulfil_map_to_no_facts(name, fields):
    assert _facts(n.item(name, **fields)) == []


def test_the_stored_event_picks_its_own_item_of_a_notification():
    items = [n.item("RECURRING_CONTRACT"), n.item("AUTHORISATION"), n.item("REFUND")]

    assert _facts(*items, pick=0) == []
    assert [f.type for f in _facts(*items, pick=1)] == ["payhook.payment.succeeded.v1"]
    assert [f.type for f in _facts(*items, pick=2)] == ["payhook.payment.refunded.v1"]
    assert scheme.facts(samples.adyen_notification(*items), provider_event_id="AUTHORISATION:0000:true") == []


def test_unusable_amounts_are_left_out_rather_than_failing_the_schema():
    [fact] = _facts(n.item("AUTHORISATION", amount={"value": -5, "currency": "euro"}))

    assert (fact.data["amount"], fact.data["currency"]) == (None, None)
