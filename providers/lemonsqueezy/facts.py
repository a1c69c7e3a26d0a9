"""Lemon Squeezy adapter: maps the webhook events payhook fulfils to canonical facts.

A payload is a JSON:API document: `meta.event_name` says what happened, `data` is the order,
subscription or subscription invoice as it is now, `data.attributes.updated_at` is when it last
changed (the provider event time). Payment references are prefixed with the object type
(`order:<id>`, `subscription-invoice:<id>`): Lemon Squeezy numbers each type on its own, so order 7
and subscription invoice 7 are different payments.

Subscription statuses are translated to the canonical (Stripe) vocabulary fulfilment orders by:
on_trial -> trialing, expired -> canceled; a `cancelled` subscription keeps access until `ends_at`
(Lemon Squeezy's grace period), so until then it is still active, with `ends_at` as its period end.
"""

from collections.abc import Callable
from datetime import datetime

from canonical.facts import Fact, buyer
from providers.base import event_time_utc

ORDER = "orders"
SUBSCRIPTION = "subscriptions"
SUBSCRIPTION_INVOICE = "subscription-invoices"
SUBSCRIPTION_EVENTS = {
    "subscription_created", "subscription_updated", "subscription_cancelled", "subscription_resumed",
    "subscription_expired", "subscription_paused", "subscription_unpaused", "subscription_plan_changed",
}


def datetime_parse(value: object) -> datetime | None:
    """An ISO 8601 time as Lemon Squeezy writes it ("2023-01-17T12:26:23.000000Z"), aware; else None."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return event_time_utc(parsed) if parsed.tzinfo is not None else None


def object_id(value: object) -> str | None:
    """A JSON:API id is a string; Lemon Squeezy's attribute ids (customer_id, variant_id…) are numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= 255 and "\x00" not in value:
        return value
    return None


def _iso(value: object) -> str | None:
    parsed = datetime_parse(value)
    return parsed.isoformat() if parsed else None


def _amount(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _currency(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha():
        return value.lower()
    return None


def _custom_data(payload: dict) -> dict:
    custom = (payload.get("meta") or {}).get("custom_data")
    return custom if isinstance(custom, dict) else {}


def _custom_price_ids(payload: dict) -> list[str]:
    """`price_id` / comma-separated `price_ids` passed as checkout custom data, as Stripe's metadata."""
    custom = _custom_data(payload)
    ids = []
    if isinstance(custom.get("price_id"), str | int):
        ids.append(object_id(custom["price_id"]))
    if isinstance(custom.get("price_ids"), str):
        ids += custom["price_ids"].split(",")
    return list(dict.fromkeys(price.strip() for price in ids if price and price.strip() and len(price.strip()) <= 255))


def _buyer(payload: dict, attributes: dict) -> dict:
    return buyer(
        user_id=_custom_data(payload).get("user_id"),
        provider_customer_id=object_id(attributes.get("customer_id")),
        email=attributes.get("user_email"),
    )


def _order_created(payload: dict, obj: dict, time: datetime) -> list[Fact]:
    attributes = obj["attributes"]
    if obj.get("type") != ORDER or attributes.get("status") != "paid":
        return []
    reference = f"order:{obj['id']}"
    variant = object_id((attributes.get("first_order_item") or {}).get("variant_id"))
    return [
        Fact(
            type="payhook.payment.succeeded.v1",
            subject=reference,
            time=time,
            data={
                "buyer": _buyer(payload, attributes),
                "payment_intent": reference,
                "source_object": reference,
                "subscription": None,
                "price_ids": [variant] if variant else _custom_price_ids(payload),
                "amount": _amount(attributes.get("total")),
                "currency": _currency(attributes.get("currency")),
                "access_until": None,
            },
        )
    ]


def _refunded(payload: dict, obj: dict, time: datetime, *, expected_type: str, prefix: str) -> list[Fact]:
    attributes = obj["attributes"]
    if obj.get("type") != expected_type:
        return []
    reference = f"{prefix}:{obj['id']}"
    total, refunded = _amount(attributes.get("total")), _amount(attributes.get("refunded_amount"))
    # `refunded` status is a full refund; `partial_refund` is not. Older payloads lack refunded_amount.
    full = attributes.get("status") == "refunded" or (total is not None and refunded is not None and refunded >= total > 0)
    if refunded is None and full:
        refunded = total
    return [
        Fact(
            type="payhook.payment.refunded.v1",
            subject=reference,
            time=time,
            data={
                "buyer": _buyer(payload, attributes),
                "payment_intent": reference,
                "charge": reference,
                "amount": total,
                "amount_refunded": refunded,
                "currency": _currency(attributes.get("currency")),
                "full": full,
            },
        )
    ]


def _subscription_changed(payload: dict, obj: dict, time: datetime) -> list[Fact]:
    attributes = obj["attributes"]
    if obj.get("type") != SUBSCRIPTION:
        return []
    status = attributes.get("status")
    ends_at = datetime_parse(attributes.get("ends_at"))
    variant = object_id(attributes.get("variant_id"))
    common = {
        "buyer": _buyer(payload, attributes),
        "subscription": obj["id"],
        "price_ids": [variant] if variant else _custom_price_ids(payload),
    }

    def activated(canonical_status: str, period_end: str | None) -> list[Fact]:
        data = {**common, "status": canonical_status, "current_period_end": period_end}
        return [Fact(type="payhook.subscription.activated.v1", subject=obj["id"], time=time, data=data)]

    def canceled(canonical_status: str) -> list[Fact]:
        data = {**common, "status": canonical_status}
        return [Fact(type="payhook.subscription.canceled.v1", subject=obj["id"], time=time, data=data)]

    if payload["meta"]["event_name"] == "subscription_expired" or status == "expired":
        return canceled("canceled")
    if status == "unpaid":
        return canceled("unpaid")
    if status == "cancelled":
        # Cancelled is Stripe's cancel_at_period_end: access holds until ends_at, and the customer
        # may resume until then. subscription_expired ends it; a cancellation already past its
        # end (or without one) ends it now.
        if ends_at is not None and ends_at > time:
            return activated("active", ends_at.isoformat())
        return canceled("canceled")
    if status == "paused":
        # Pause mode "free" keeps the service running without charging; "void" withholds it.
        pause = attributes.get("pause") if isinstance(attributes.get("pause"), dict) else {}
        return [] if pause.get("mode") == "free" else canceled("paused")
    if status == "on_trial":
        return activated("trialing", _iso(attributes.get("trial_ends_at")) or _iso(attributes.get("renews_at")))
    if status == "active":
        return activated("active", (ends_at.isoformat() if ends_at else None) or _iso(attributes.get("renews_at")))
    return []  # past_due: Lemon Squeezy is retrying the payment; access is unchanged until it decides


def _invoice_reference(obj: dict) -> str:
    return f"subscription-invoice:{obj['id']}"


def _subscription_payment_success(payload: dict, obj: dict, time: datetime) -> list[Fact]:
    attributes = obj["attributes"]
    if obj.get("type") != SUBSCRIPTION_INVOICE or attributes.get("status") not in (None, "paid"):
        return []
    # A subscription invoice names no variant. Its access comes from the subscription_* events
    # (variant_id, renews_at), which Lemon Squeezy sends beside it; the invoice is a fulfilled
    # payment only when the checkout's custom data names its price, as Stripe's metadata may.
    price_ids = _custom_price_ids(payload)
    if not price_ids:
        return []
    reference = _invoice_reference(obj)
    return [
        Fact(
            type="payhook.payment.succeeded.v1",
            subject=reference,
            time=time,
            data={
                "buyer": _buyer(payload, attributes),
                "payment_intent": reference,
                "source_object": reference,
                "subscription": object_id(attributes.get("subscription_id")),
                "price_ids": price_ids,
                "amount": _amount(attributes.get("total")),
                "currency": _currency(attributes.get("currency")),
                "access_until": None,
            },
        )
    ]


def _subscription_payment_failed(payload: dict, obj: dict, time: datetime) -> list[Fact]:
    attributes = obj["attributes"]
    if obj.get("type") != SUBSCRIPTION_INVOICE:
        return []
    reference = _invoice_reference(obj)
    return [
        Fact(
            type="payhook.payment.failed.v1",
            subject=reference,
            time=time,
            data={
                "buyer": _buyer(payload, attributes),
                "payment_intent": reference,
                "invoice": reference,
                "subscription": object_id(attributes.get("subscription_id")),
                "amount": _amount(attributes.get("total")),
                "currency": _currency(attributes.get("currency")),
            },
        )
    ]


HANDLERS: dict[str, Callable[[dict, dict, datetime], list[Fact]]] = {
    "order_created": _order_created,
    "order_refunded": lambda payload, obj, time: _refunded(payload, obj, time, expected_type=ORDER, prefix="order"),
    **{name: _subscription_changed for name in SUBSCRIPTION_EVENTS},
    "subscription_payment_success": _subscription_payment_success,
    "subscription_payment_failed": _subscription_payment_failed,
    "subscription_payment_refunded": lambda payload, obj, time: _refunded(
        payload, obj, time, expected_type=SUBSCRIPTION_INVOICE, prefix="subscription-invoice"
    ),
}


def lemonsqueezy_facts(payload: dict) -> list[Fact]:
    """The canonical facts of one Lemon Squeezy event; [] for a type payhook does not fulfil."""
    meta = payload.get("meta")
    obj = payload.get("data")
    if not isinstance(meta, dict) or not isinstance(obj, dict) or not isinstance(obj.get("attributes"), dict):
        return []
    handler = HANDLERS.get(meta.get("event_name"))
    time = datetime_parse(obj["attributes"].get("updated_at"))
    obj_id = object_id(obj.get("id"))
    if handler is None or time is None or obj_id is None:
        return []
    return handler(payload, {**obj, "id": obj_id}, time)
