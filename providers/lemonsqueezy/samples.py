"""Sample Lemon Squeezy webhook events, built on the shapes of Lemon Squeezy's published examples.

`lemonsqueezy-objects.json` holds one order, subscription and subscription invoice as the API
reference shows them (https://docs.lemonsqueezy.com/api/orders, /subscriptions,
/subscription-invoices); a webhook delivers such an object as `data`, beside
`meta: {event_name, test_mode, webhook_id, custom_data}`. Used by `send_test_webhook`, the tests
and the benchmarks.
"""

import copy
import functools
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

SAMPLE_VARIANT_ID = "1"  # the variant in Lemon Squeezy's published examples: catalog price_id "1"

_OBJECT_FOR_EVENT_PREFIX = (
    ("order_", "orders"),
    ("subscription_payment_", "subscription-invoices"),
    ("subscription_", "subscriptions"),
)
SAMPLE_EVENT_TYPES = (
    "order_created", "order_refunded",
    "subscription_created", "subscription_updated", "subscription_cancelled", "subscription_resumed",
    "subscription_expired", "subscription_paused", "subscription_unpaused", "subscription_plan_changed",
    "subscription_payment_success", "subscription_payment_failed", "subscription_payment_refunded",
)


@functools.cache
def lemonsqueezy_objects() -> dict:
    return json.loads((Path(__file__).parent / "lemonsqueezy-objects.json").read_text())


def lemonsqueezy_object(data_type: str) -> dict:
    return copy.deepcopy(lemonsqueezy_objects()[data_type])


def lemonsqueezy_time(value: datetime) -> str:
    """A time as Lemon Squeezy writes it: "2023-01-17T12:26:23.000000Z"."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lemonsqueezy_event(event_name: str, obj: dict, *, custom_data: dict | None = None, test_mode: bool = False) -> dict:
    """A webhook body: `meta` beside the object. `custom_data` appears only when the checkout had some."""
    meta = {"test_mode": test_mode, "event_name": event_name, "webhook_id": str(uuid.UUID(int=1))}
    if custom_data is not None:
        meta["custom_data"] = custom_data
    obj["attributes"]["test_mode"] = test_mode
    return {"meta": meta, "data": obj}


def lemonsqueezy_sample_event(event_name: str, *, test_mode: bool = False, now: datetime | None = None) -> dict:
    """A coherent sample of `event_name`, new each call (fresh ids, `updated_at` now), like a delivery
    Lemon Squeezy's dashboard "send test webhook" makes: an order paid for the sample variant, an
    active subscription renewing in 30 days, and so on."""
    if event_name not in SAMPLE_EVENT_TYPES:
        raise KeyError(f"no sample for Lemon Squeezy event {event_name!r}; known: {', '.join(SAMPLE_EVENT_TYPES)}")
    data_type = next(name for prefix, name in _OBJECT_FOR_EVENT_PREFIX if event_name.startswith(prefix))
    obj = lemonsqueezy_object(data_type)
    now = now or datetime.now(UTC)
    attributes = obj["attributes"]
    obj["id"] = str(secrets.randbelow(10**9) + 10**6)
    attributes.update(created_at=lemonsqueezy_time(now), updated_at=lemonsqueezy_time(now))
    if data_type == "orders":
        attributes["first_order_item"].update(order_id=int(obj["id"]), variant_id=int(SAMPLE_VARIANT_ID))
        if event_name == "order_refunded":
            attributes.update(status="refunded", status_formatted="Refunded", refunded=True,
                              refunded_at=lemonsqueezy_time(now), refunded_amount=attributes["total"])
    elif data_type == "subscriptions":
        attributes.update(variant_id=int(SAMPLE_VARIANT_ID), renews_at=lemonsqueezy_time(now + timedelta(days=30)))
        if event_name == "subscription_cancelled":
            attributes.update(status="cancelled", status_formatted="Cancelled", cancelled=True,
                              ends_at=attributes["renews_at"])
        elif event_name == "subscription_expired":
            attributes.update(status="expired", status_formatted="Expired", cancelled=True, ends_at=lemonsqueezy_time(now))
        elif event_name == "subscription_paused":
            attributes.update(status="paused", status_formatted="Paused", pause={"mode": "void", "resumes_at": None})
    else:
        attributes["subscription_id"] = secrets.randbelow(10**9) + 10**6
        if event_name == "subscription_payment_failed":
            attributes.update(status="pending", status_formatted="Pending")
        elif event_name == "subscription_payment_refunded":
            attributes.update(status="refunded", status_formatted="Refunded", refunded=True,
                              refunded_at=lemonsqueezy_time(now), refunded_amount=attributes["total"])
    return lemonsqueezy_event(event_name, obj, test_mode=test_mode)
