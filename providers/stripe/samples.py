"""Sample provider events built on Stripe's own published example objects.

`stripe-objects.json` is a copy of ../shared/fixtures/stripe-objects.json (Stripe's OpenAPI
fixtures). Used by `send_test_webhook`, the tests and the benchmarks.
"""

import copy
import functools
import json
import secrets
import time
from pathlib import Path

_OBJECT_FOR_TYPE_PREFIX = (
    ("checkout.session.", "checkout.session"),
    ("invoice.", "invoice"),
    ("customer.subscription.", "subscription"),
    ("charge.dispute.", "dispute"),
    ("charge.refund.", "refund"),
    ("charge.", "charge"),
    ("payment_intent.", "payment_intent"),
    ("customer.", "customer"),
    ("price.", "price"),
    ("product.", "product"),
)


@functools.cache
def stripe_objects() -> dict:
    return json.loads((Path(__file__).parent / "stripe-objects.json").read_text())


def stripe_object(name: str) -> dict:
    return copy.deepcopy(stripe_objects()[name])


def stripe_object_for_event_type(event_type: str) -> dict:
    for prefix, name in _OBJECT_FOR_TYPE_PREFIX:
        if event_type.startswith(prefix):
            return stripe_object(name)
    raise KeyError(f"no sample object for Stripe event type {event_type!r}")


def stripe_event(
    event_type: str, obj: dict | None = None, *, event_id: str | None = None, created: int | None = None, livemode: bool = True
) -> dict:
    """A Stripe event envelope shaped like the published `event` example.

    `livemode` defaults to true, the mode of a default endpoint (the published example is a test
    event): a sample must be fulfilled by the endpoint it is sent to.
    """
    event = stripe_object("event")
    event.update(
        id=event_id or f"evt_test_{secrets.token_hex(12)}",
        livemode=livemode,
        type=event_type,
        created=created if created is not None else int(time.time()),
        api_version="2025-10-29.clover",
        pending_webhooks=1,
        data={"object": obj if obj is not None else stripe_object_for_event_type(event_type)},
    )
    return event


SAMPLE_PRICE_ID = "price_1PgafmB7WZ01zgkW6dKueIc5"  # the price in Stripe's published examples


def stripe_trigger_event(event_type: str, *, livemode: bool = True) -> dict:
    """A coherent sample event, like `stripe trigger`: paid, with the sample price and customer.

    Stripe's published objects are independent examples (an unpaid session, a draft invoice); this
    makes the ones payhook fulfils tell one story, so a newcomer sees an event fulfilled.
    """
    obj = stripe_object_for_event_type(event_type)
    customer = stripe_object("customer")["id"]
    if event_type.startswith("checkout.session."):
        obj.update(payment_status="paid", status="complete", customer=customer, metadata={"price_id": SAMPLE_PRICE_ID})
    elif event_type.startswith("invoice."):
        obj.update(status="paid" if event_type == "invoice.paid" else "open", customer=customer)
        for line in obj["lines"]["data"]:
            line["pricing"] = {"type": "price_details", "price_details": {"price": SAMPLE_PRICE_ID, "product": "prod_sample"}}
    elif event_type.startswith("customer.subscription."):
        obj["customer"] = customer
        for item in obj["items"]["data"]:
            item["current_period_end"] = int(time.time()) + 30 * 86400
    elif event_type in ("charge.refunded", "charge.dispute.created"):
        obj["payment_intent"] = stripe_object("payment_intent")["id"]
    return stripe_event(event_type, obj, livemode=livemode)
