"""Paddle Billing adapter: maps the Paddle events payhook fulfils to canonical facts.

Paddle sends amounts as strings of minor units ("65215") and currency codes in upper case ("USD");
the canonical schemas want integers and lower case. The buyer is `data.custom_data.user_id` (set by
the integrator at checkout) and `data.customer_id` (`ctm_…`); webhook payloads carry no e-mail.

Which events: Paddle's own guidance is to provision on `transaction.completed`, which carries
everything (subscription id, billing period); `transaction.paid` comes first, before Paddle has
attached the subscription, so granting on it as well would grant the same payment once under
`payment:<txn>` and again under `subscription:<sub>`. It is stored and ignored. Every fact about a
payment references the transaction id (`txn_…`) as its `payment_intent`, which is what refunds and
chargebacks (adjustments, which name the `transaction_id`) revoke.
"""

import re
from collections.abc import Callable
from datetime import UTC, datetime

from canonical.facts import Fact, buyer
from providers.base import rfc3339_parse

ACTIVE_SUBSCRIPTION = {"active", "trialing"}
# Paddle's statuses without access: canceled (ended), paused (not billed, no service), past_due
# (a renewal failed and dunning runs; access returns with `active` when a retry succeeds).
ENDED_SUBSCRIPTION = {"canceled", "paused", "past_due"}

_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")
_MINOR_UNITS = re.compile(r"\d{1,18}")  # up to 18 digits: what a signed 64-bit column holds
_CURRENCY = re.compile(r"[A-Za-z]{3}")


def _iso(value: object) -> str | None:
    parsed = rfc3339_parse(value)
    return parsed.isoformat() if parsed else None


def _minor_units(value: object) -> int | None:
    """Paddle's amount strings ("65215") as an integer; an integer as is; anything else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and _MINOR_UNITS.fullmatch(value):
        return int(value)
    return None


def _currency(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and _CURRENCY.fullmatch(value) else None


def _str_id(value: object) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= 255 else None


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _price_ids(entity: dict) -> list[str]:
    """Each `items[].price.id` (transactions and subscriptions), or an item's `price_id`."""
    items = entity.get("items")
    ids = []
    for item in items if isinstance(items, list) else []:
        item = _dict(item)
        ids.append(_str_id(_dict(item.get("price")).get("id")) or _str_id(item.get("price_id")))
    return list(dict.fromkeys(price for price in ids if price))


def _buyer(entity: dict) -> dict:
    return buyer(user_id=_dict(entity.get("custom_data")).get("user_id"), provider_customer_id=_str_id(entity.get("customer_id")))


def _transaction_completed(txn: dict, time: datetime) -> list[Fact]:
    subscription = _str_id(txn.get("subscription_id"))
    totals = _dict(_dict(txn.get("details")).get("totals"))
    return [
        Fact(
            type="payhook.payment.succeeded.v1",
            subject=txn["id"],
            time=time,
            data={
                "buyer": _buyer(txn),
                "payment_intent": txn["id"],
                "source_object": txn["id"],
                "subscription": subscription,
                "price_ids": _price_ids(txn),
                "amount": _minor_units(totals.get("total")),
                "currency": _currency(txn.get("currency_code") or totals.get("currency_code")),
                "access_until": _iso(_dict(txn.get("billing_period")).get("ends_at")) if subscription else None,
            },
        )
    ]


def _transaction_payment_failed(txn: dict, time: datetime) -> list[Fact]:
    # A decline inside checkout (origin "web") is shown to the buyer there and then, and they may
    # retry with another card; a failed renewal or invoice payment is what the buyer must be told.
    if txn.get("origin") == "web":
        return []
    totals = _dict(_dict(txn.get("details")).get("totals"))
    return [
        Fact(
            type="payhook.payment.failed.v1",
            subject=txn["id"],
            time=time,
            data={
                "buyer": _buyer(txn),
                "payment_intent": txn["id"],
                "invoice": txn["id"],  # Paddle bills with the transaction itself
                "subscription": _str_id(txn.get("subscription_id")),
                "amount": _minor_units(totals.get("total")),
                "currency": _currency(txn.get("currency_code") or totals.get("currency_code")),
            },
        )
    ]


def _subscription_changed(subscription: dict, time: datetime) -> list[Fact]:
    status = subscription.get("status") if isinstance(subscription.get("status"), str) else ""
    common = {
        "buyer": _buyer(subscription),
        "subscription": subscription["id"],
        "status": status,
        "price_ids": _price_ids(subscription),
    }
    if status in ENDED_SUBSCRIPTION:
        return [Fact(type="payhook.subscription.canceled.v1", subject=subscription["id"], time=time, data=common)]
    if status in ACTIVE_SUBSCRIPTION:
        period_end = _iso(_dict(subscription.get("current_billing_period")).get("ends_at"))
        return [
            Fact(
                type="payhook.subscription.activated.v1",
                subject=subscription["id"],
                time=time,
                data={**common, "current_period_end": period_end},
            )
        ]
    return []


def _adjustment_full(adjustment: dict) -> bool:
    """A refund of the whole transaction: Paddle's `type: full`; before that field existed (null),
    an adjustment whose every item is refunded in `full`."""
    kind = adjustment.get("type")
    if kind is not None:
        return kind == "full"
    items = adjustment.get("items")
    return isinstance(items, list) and bool(items) and all(_dict(item).get("type") == "full" for item in items)


def _adjustment(adjustment: dict, time: datetime) -> list[Fact]:
    transaction = _str_id(adjustment.get("transaction_id"))
    totals = _dict(adjustment.get("totals"))
    currency = _currency(adjustment.get("currency_code") or totals.get("currency_code"))
    action = adjustment.get("action")
    if action == "refund" and adjustment.get("status") == "approved":
        return [
            Fact(
                type="payhook.payment.refunded.v1",
                subject=transaction or adjustment["id"],
                time=time,
                data={
                    "buyer": _buyer(adjustment),
                    "payment_intent": transaction,
                    "charge": adjustment["id"],  # the adjustment (adj_…); the payment is payment_intent
                    "amount": None,  # an adjustment does not carry its transaction's total
                    "amount_refunded": _minor_units(totals.get("total")),
                    "currency": currency,
                    "full": _adjustment_full(adjustment),
                },
            )
        ]
    if action == "chargeback":
        reason = adjustment.get("reason")
        return [
            Fact(
                type="payhook.dispute.opened.v1",
                subject=transaction or adjustment["id"],
                time=time,
                data={
                    "payment_intent": transaction,
                    "charge": transaction,
                    "dispute": adjustment["id"],
                    "amount": _minor_units(totals.get("total")),
                    "currency": currency,
                    "reason": reason[:64] if isinstance(reason, str) else None,
                },
            )
        ]
    return []  # credits, pending or rejected refunds, chargeback warnings and reversals


HANDLERS: dict[str, Callable[[dict, datetime], list[Fact]]] = {
    "transaction.completed": _transaction_completed,
    "transaction.payment_failed": _transaction_payment_failed,
    "subscription.created": _subscription_changed,
    "subscription.activated": _subscription_changed,
    "subscription.updated": _subscription_changed,
    "subscription.trialing": _subscription_changed,
    "subscription.resumed": _subscription_changed,
    "subscription.canceled": _subscription_changed,
    "subscription.paused": _subscription_changed,
    "subscription.past_due": _subscription_changed,
    "adjustment.created": _adjustment,
    "adjustment.updated": _adjustment,
}


def paddle_facts(payload: dict) -> list[Fact]:
    """The canonical facts of one Paddle event; [] for a type payhook does not fulfil."""
    event_type = payload.get("event_type")
    handler = HANDLERS.get(event_type) if isinstance(event_type, str) else None  # a signed list is still not a type
    entity = payload.get("data")
    if handler is None or not isinstance(entity, dict) or not _str_id(entity.get("id")):
        return []
    time = rfc3339_parse(payload.get("occurred_at")) or datetime.now(UTC)
    return handler(entity, time)
