"""Sample PayPal events shaped like PayPal's published webhook examples (`paypal-events.json`).

Used by `send_test_webhook` and the tests. They tell one story: the order's capture
3C679366HH908993F is the one the refund and the dispute name; the order's item has the sku
SAMPLE_SKU and the subscription the plan SAMPLE_PLAN_ID (put those in the catalog to see them fulfilled).
"""

import copy
import functools
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

SAMPLE_SKU = "PAYHOOK-SAMPLE-PRO"
SAMPLE_PLAN_ID = "P-5ML4271244454362WXNWU5NQ"
SAMPLE_CAPTURE_ID = "3C679366HH908993F"
# Types built from a published example of the same resource with another status.
_DERIVED = {
    "BILLING.SUBSCRIPTION.RE-ACTIVATED": ("BILLING.SUBSCRIPTION.ACTIVATED", "ACTIVE"),
    "BILLING.SUBSCRIPTION.CANCELLED": ("BILLING.SUBSCRIPTION.ACTIVATED", "CANCELLED"),
    "BILLING.SUBSCRIPTION.EXPIRED": ("BILLING.SUBSCRIPTION.ACTIVATED", "EXPIRED"),
    "BILLING.SUBSCRIPTION.SUSPENDED": ("BILLING.SUBSCRIPTION.ACTIVATED", "SUSPENDED"),
    "BILLING.SUBSCRIPTION.PAYMENT.FAILED": ("BILLING.SUBSCRIPTION.ACTIVATED", "ACTIVE"),
}


@functools.cache
def paypal_events() -> dict:
    events = json.loads((Path(__file__).parent / "paypal-events.json").read_text())
    events.pop("_comment", None)
    return events


def paypal_event_types() -> list[str]:
    return sorted([*paypal_events(), *_DERIVED])


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def paypal_sample_event(
    event_type: str, *, event_id: str | None = None, create_time: datetime | None = None, sandbox: bool = False
) -> dict:
    """A PayPal event of `event_type` with a fresh `WH-` id, sent now (or at `create_time`), from the
    live API (links on api.paypal.com) or the sandbox's (api.sandbox.paypal.com)."""
    base_type, status = _DERIVED.get(event_type, (event_type, None))
    if base_type not in paypal_events():
        raise KeyError(f"no sample PayPal event {event_type!r}; known: {', '.join(paypal_event_types())}")
    event = copy.deepcopy(paypal_events()[base_type])
    moment = create_time or datetime.now(UTC)
    event.update(
        id=event_id or f"WH-{secrets.token_hex(8).upper()}-{secrets.token_hex(8).upper()}",
        create_time=_iso(moment),
        event_type=event_type,
    )
    resource = event["resource"]
    if status is not None:
        resource["status"] = status
    if base_type == "BILLING.SUBSCRIPTION.ACTIVATED":
        resource["billing_info"]["next_billing_time"] = _iso(moment + timedelta(days=30))
        if event_type == "BILLING.SUBSCRIPTION.PAYMENT.FAILED":
            resource["billing_info"]["failed_payments_count"] = 1
            resource["billing_info"]["last_failed_payment"] = {
                "amount": {"currency_code": "USD", "value": "10.00"}, "time": _iso(moment),
                "reason_code": "PAYMENT_DENIED",
            }
    if sandbox:
        event = json.loads(json.dumps(event).replace("https://api.paypal.com/", "https://api.sandbox.paypal.com/"))
    return event
