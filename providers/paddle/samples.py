"""Sample Paddle Billing events shaped like Paddle's published webhook examples.

`paddle-entities.json` holds a transaction, a subscription and an adjustment as Paddle publishes them
in its webhook and simulator examples (the "AeroEdit" account), cut down to one item priced at
SAMPLE_PRICE_ID. Used by `send_test_webhook`, the tests and the benchmarks.
"""

import copy
import functools
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

SAMPLE_PRICE_ID = "pri_01gsz8x8sawmvhz1pv30nge1ke"  # the price in Paddle's published examples
_ULID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Paddle ids: prefix + 26 lowercase Crockford base32

_ENTITY_FOR_TYPE = {
    "transaction.completed": "transaction",
    "transaction.paid": "transaction",
    "transaction.payment_failed": "transaction",
    "subscription.created": "subscription",
    "subscription.activated": "subscription",
    "subscription.updated": "subscription",
    "subscription.trialing": "subscription",
    "subscription.resumed": "subscription",
    "subscription.canceled": "subscription",
    "subscription.paused": "subscription",
    "subscription.past_due": "subscription",
    "adjustment.created": "adjustment",
    "adjustment.updated": "adjustment",
}
_SUBSCRIPTION_STATUS = {"subscription.trialing": "trialing", "subscription.canceled": "canceled",
                        "subscription.paused": "paused", "subscription.past_due": "past_due"}

@functools.cache
def _entities() -> dict:
    return json.loads((Path(__file__).parent / "paddle-entities.json").read_text())

def paddle_entity(name: str) -> dict:
    return copy.deepcopy(_entities()[name])

def paddle_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ULID_ALPHABET) for _ in range(26))

def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

def paddle_event(event_type: str, data: dict, *, event_id: str | None = None, occurred_at: datetime | str | None = None) -> dict:
    """A Paddle notification: the envelope of Paddle's published webhook examples around `data`."""
    if occurred_at is None:
        occurred_at = datetime.now(UTC)
    return {
        "event_id": event_id or paddle_id("evt_"),
        "event_type": event_type,
        "occurred_at": occurred_at if isinstance(occurred_at, str) else rfc3339(occurred_at),
        "notification_id": paddle_id("ntf_"),
        "data": data,
    }

def paddle_trigger_event(event_type: str) -> dict:
    """A coherent sample event: the sample price and customer, billing periods that run from now."""
    try:
        entity = paddle_entity(_ENTITY_FOR_TYPE[event_type])
    except KeyError:
        raise KeyError(f"no sample for Paddle event type {event_type!r}; known: {', '.join(_ENTITY_FOR_TYPE)}") from None
    now = datetime.now(UTC)
    period = {"starts_at": rfc3339(now), "ends_at": rfc3339(now + timedelta(days=30))}
    if event_type.startswith("transaction."):
        entity["billing_period"] = period
        if event_type == "transaction.paid":
            entity.update(status="paid", invoice_id=None, invoice_number=None, subscription_id=None)
        elif event_type == "transaction.payment_failed":
            # A renewal that failed (a decline inside checkout is not notified)
            entity.update(status="past_due", origin="subscription_recurring")
            entity["payments"][0].update(status="error", error_code="declined", captured_at=None)
    elif event_type.startswith("subscription."):
        entity["status"] = _SUBSCRIPTION_STATUS.get(event_type, "active")
        ended = entity["status"] in ("canceled", "paused")
        entity["current_billing_period"] = None if ended else period
        entity["next_billed_at"] = None if ended else period["ends_at"]
        if entity["status"] == "canceled":
            entity["canceled_at"] = rfc3339(now)
        if entity["status"] == "paused":
            entity["paused_at"] = rfc3339(now)
    else:
        entity["created_at"] = entity["updated_at"] = rfc3339(now)
    return paddle_event(event_type, entity, occurred_at=now)

