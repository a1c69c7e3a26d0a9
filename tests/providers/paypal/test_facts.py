"""PayPal payloads -> canonical facts, each validated by building the canonical envelope."""

from datetime import UTC, datetime

import pytest

from canonical.envelope import canonical_events_build
from providers import scheme_get
from providers.paypal import samples
from providers.paypal.facts import minor_units, refund_capture_id, rfc3339_parse

pytestmark = pytest.mark.django_db  # buyer() hashes emails with the blind-index key
scheme = scheme_get("paypal")
FULFILLED = [
    "CHECKOUT.ORDER.COMPLETED", "PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.REFUNDED", "CUSTOMER.DISPUTE.CREATED",
    "BILLING.SUBSCRIPTION.ACTIVATED", "BILLING.SUBSCRIPTION.RE-ACTIVATED", "BILLING.SUBSCRIPTION.CANCELLED",
    "BILLING.SUBSCRIPTION.EXPIRED", "BILLING.SUBSCRIPTION.SUSPENDED", "PAYMENT.SALE.DENIED",
    "BILLING.SUBSCRIPTION.PAYMENT.FAILED",
]


def _canonical(payload: dict) -> list[dict]:
    return canonical_events_build(scheme.facts(payload), idempotency_key="k", source="/webhooks/x", correlation_id="c")


@pytest.mark.parametrize("event_type", FULFILLED)
def test_each_fulfilled_sample_builds_valid_canonical_events(event_type):
    events = _canonical(samples.paypal_sample_event(event_type))
    assert len(events) == 1


def test_order_completed_pays_with_the_capture_id_and_the_items_skus():
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED", create_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    event["resource"]["custom_id"] = "42"

    [canonical] = _canonical(event)

    data = canonical["data"]
    assert canonical["type"] == "payhook.payment.succeeded.v1"
    assert canonical["time"] == "2026-01-02T03:04:05+00:00"
    assert canonical["subject"] == data["payment_intent"] == samples.SAMPLE_CAPTURE_ID
    assert data["source_object"] == "5O190127TN364715T"
    assert data["price_ids"] == [samples.SAMPLE_SKU]
    assert (data["amount"], data["currency"]) == (10000, "usd")
    assert data["buyer"]["user_id"] == "42"
    assert data["buyer"]["provider_customer_id"] == "QYR5Z8XDVJNXQ"
    assert data["buyer"]["email_hash"] and "customer@example.com" not in str(canonical)


def test_order_and_capture_events_of_one_purchase_name_the_same_payment():
    order = _canonical(samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED"))[0]["data"]
    capture = _canonical(samples.paypal_sample_event("PAYMENT.CAPTURE.COMPLETED"))[0]["data"]
    refund = _canonical(samples.paypal_sample_event("PAYMENT.CAPTURE.REFUNDED"))[0]["data"]
    dispute = _canonical(samples.paypal_sample_event("CUSTOMER.DISPUTE.CREATED"))[0]["data"]

    assert order["payment_intent"] == capture["payment_intent"] == refund["payment_intent"] == dispute["payment_intent"]
    assert capture["source_object"] == order["source_object"]
    assert capture["price_ids"] == []  # PayPal's capture carries no items (see docs/providers.md)


def test_the_order_buyer_falls_back_to_the_purchase_units_custom_id():
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED")
    event["resource"]["purchase_units"][0]["custom_id"] = "7"
    assert _canonical(event)[0]["data"]["buyer"]["user_id"] == "7"


def test_an_order_whose_capture_is_pending_grants_nothing():
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED")
    event["resource"]["purchase_units"][0]["payments"]["captures"][0]["status"] = "PENDING"
    assert scheme.facts(event) == []


def test_an_order_with_two_purchase_units_yields_one_payment_per_capture():
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED")
    unit = event["resource"]["purchase_units"][0]
    second = {**unit, "items": [{**unit["items"][0], "sku": "OTHER"}],
              "payments": {"captures": [{**unit["payments"]["captures"][0], "id": "9XY"}]}}
    event["resource"]["purchase_units"].append(second)

    events = _canonical(event)

    assert [(e["data"]["payment_intent"], e["data"]["price_ids"]) for e in events] == [
        (samples.SAMPLE_CAPTURE_ID, [samples.SAMPLE_SKU]), ("9XY", ["OTHER"])
    ]
    assert len({e["idempotencykey"] for e in events}) == 2


def test_a_refund_names_its_capture_through_the_up_link_or_the_related_ids():
    refund = samples.paypal_sample_event("PAYMENT.CAPTURE.REFUNDED")["resource"]
    assert refund_capture_id(refund) == samples.SAMPLE_CAPTURE_ID
    refund["links"] = [link for link in refund["links"] if link["rel"] != "up"]
    assert refund_capture_id(refund) is None
    refund["supplementary_data"] = {"related_ids": {"capture_id": "2GG279541U471931P"}}
    assert refund_capture_id(refund) == "2GG279541U471931P"
    refund["links"].append({"href": "https://api.paypal.com/v2/checkout/orders/5O190127TN364715T", "rel": "up"})
    assert refund_capture_id(refund) == "2GG279541U471931P"  # an "up" link to an order is not a capture


def test_a_completed_refund_is_full_and_carries_the_refunded_amount():
    [canonical] = _canonical(samples.paypal_sample_event("PAYMENT.CAPTURE.REFUNDED"))
    assert canonical["data"]["full"] is True
    assert canonical["data"]["charge"] == "1Y107995YT783435V"
    assert (canonical["data"]["amount_refunded"], canonical["data"]["currency"]) == (10000, "usd")


def test_a_pending_refund_revokes_nothing():
    event = samples.paypal_sample_event("PAYMENT.CAPTURE.REFUNDED")
    event["resource"]["status"] = "PENDING"
    assert _canonical(event)[0]["data"]["full"] is False


def test_a_dispute_names_the_disputed_capture():
    [canonical] = _canonical(samples.paypal_sample_event("CUSTOMER.DISPUTE.CREATED"))
    assert canonical["data"]["dispute"] == "PP-000-042-663-135"
    assert canonical["data"]["reason"] == "MERCHANDISE_OR_SERVICE_NOT_RECEIVED"
    assert (canonical["data"]["amount"], canonical["data"]["currency"]) == (10000, "usd")


def test_subscription_activation_uses_the_plan_and_the_next_billing_time():
    event = samples.paypal_sample_event("BILLING.SUBSCRIPTION.ACTIVATED", create_time=datetime(2026, 1, 1, tzinfo=UTC))
    [canonical] = _canonical(event)
    data = canonical["data"]
    assert canonical["type"] == "payhook.subscription.activated.v1"
    assert data["subscription"] == "I-BW452GLLEP1G" and data["status"] == "active"
    assert data["price_ids"] == [samples.SAMPLE_PLAN_ID]
    assert data["current_period_end"] == "2026-01-31T00:00:00+00:00"


@pytest.mark.parametrize(
    ("event_type", "status"),
    [("BILLING.SUBSCRIPTION.CANCELLED", "canceled"), ("BILLING.SUBSCRIPTION.EXPIRED", "canceled"),
     ("BILLING.SUBSCRIPTION.SUSPENDED", "paused")],
)
def test_subscription_endings_cancel(event_type, status):
    [canonical] = _canonical(samples.paypal_sample_event(event_type))
    assert canonical["type"] == "payhook.subscription.canceled.v1"
    assert canonical["data"]["status"] == status


def test_failed_payments():
    [sale] = _canonical(samples.paypal_sample_event("PAYMENT.SALE.DENIED"))
    assert sale["type"] == "payhook.payment.failed.v1"
    assert (sale["data"]["amount"], sale["data"]["currency"], sale["data"]["subscription"]) == (1000, "eur", "I-BW452GLLEP1G")
    [subscription] = _canonical(samples.paypal_sample_event("BILLING.SUBSCRIPTION.PAYMENT.FAILED"))
    assert subscription["data"]["invoice"] == subscription["data"]["subscription"] == "I-BW452GLLEP1G"
    assert subscription["data"]["buyer"]["provider_customer_id"] == "QYR5Z8XDVJNXQ"


@pytest.mark.parametrize(
    "event_type", ["CHECKOUT.ORDER.APPROVED", "PAYMENT.CAPTURE.PENDING", "BILLING.SUBSCRIPTION.CREATED", "CUSTOMER.DISPUTE.UPDATED", ""]
)
def test_unfulfilled_types_map_to_no_facts(event_type):
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED")
    event["event_type"] = event_type
    assert scheme.facts(event) == []


@pytest.mark.parametrize("resource", [None, "x", [], {}, {"id": 5}])
def test_a_resource_without_an_id_maps_to_no_facts(resource):
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED")
    event["resource"] = resource
    assert scheme.facts(event) == []


def test_hostile_shapes_inside_a_resource_do_not_raise():
    event = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED")
    unit = event["resource"]["purchase_units"][0]
    unit["items"] = [None, "x", {"sku": 5}, {"sku": ""}, {"sku": samples.SAMPLE_SKU}]
    unit["payments"]["captures"][0]["amount"] = {"value": "1e5", "currency_code": "USD"}
    event["resource"]["payer"] = "nobody"
    [canonical] = _canonical(event)
    assert canonical["data"]["price_ids"] == [samples.SAMPLE_SKU] and canonical["data"]["amount"] is None


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [("10.00", "USD", 1000), ("10", "USD", 1000), ("0.01", "EUR", 1), ("1000", "JPY", 1000), ("1000.00", "JPY", 1000),
     ("1000.5", "JPY", None), ("1.234", "USD", None), ("1.234", "KWD", 1234), ("-1.00", "USD", None), ("1e3", "USD", None),
     ("10.00", "US", None), (10, "USD", None), ("NaN", "USD", None)],
)
def test_amounts_become_minor_units_with_the_currencys_exponent(value, currency, minor):
    assert minor_units(value, currency) == minor


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2018-08-06T23:48:59.113Z", datetime(2018, 8, 6, 23, 48, 59, 113000, tzinfo=UTC)),
     ("2018-08-15T12:13:29-07:00", datetime(2018, 8, 15, 19, 13, 29, tzinfo=UTC)),
     ("2018-08-15T12:13:29.123456789Z", datetime(2018, 8, 15, 12, 13, 29, 123456, tzinfo=UTC)),
     ("2018-19-12T22:20:32.000Z", None), ("2018-08-15 12:13:29", None), ("", None), (1, None), ("9" * 100, None)],
)
def test_rfc3339_times(value, expected):
    assert rfc3339_parse(value) == expected


def test_the_mode_is_read_from_the_events_links():
    live = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED")
    sandbox = samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED", sandbox=True)
    assert not scheme.mode_mismatch(live, mode="live") and scheme.mode_mismatch(live, mode="test")
    assert scheme.mode_mismatch(sandbox, mode="live") and not scheme.mode_mismatch(sandbox, mode="test")
    assert not scheme.mode_mismatch({"links": "x"}, mode="live")
    assert not scheme.mode_mismatch({"links": [{"href": "https://evil.test/sandbox.paypal.com"}]}, mode="test")


@pytest.mark.parametrize("mode", ["live", "test"])
def test_sample_matches_the_endpoints_mode(mode):
    import json

    body, _ = scheme.sample("CHECKOUT.ORDER.COMPLETED", mode=mode)
    assert not scheme.mode_mismatch(json.loads(body), mode=mode)
