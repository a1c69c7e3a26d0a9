"""Stripe adapter: maps the Stripe events payhook fulfils to canonical facts.

Handles the current API shape and the pre-2025 one (invoice.subscription/payment_intent at the top
level, subscription.current_period_end on the subscription, price on invoice lines). Events that
need no effect map to no facts and end `ignored`.
"""

from collections.abc import Callable
from datetime import UTC, datetime

from canonical.facts import Fact, buyer, timestamp_iso

ACTIVE_SUBSCRIPTION = {"active", "trialing"}
ENDED_SUBSCRIPTION = {"canceled", "unpaid", "incomplete_expired", "paused"}


def _id(value) -> str | None:
    """An expandable field is an id string or an expanded object with an id."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _metadata_price_ids(obj: dict) -> list[str]:
    metadata = obj.get("metadata") or {}
    ids = []
    if isinstance(metadata.get("price_id"), str):
        ids.append(metadata["price_id"])
    if isinstance(metadata.get("price_ids"), str):
        ids += metadata["price_ids"].split(",")
    return [price.strip() for price in ids if price.strip()]


def _unique(ids) -> list[str]:
    return list(dict.fromkeys(price for price in ids if price))


def _line_price_id(line: dict) -> str | None:
    pricing = line.get("pricing") or {}
    return (
        _id((pricing.get("price_details") or {}).get("price"))  # current shape
        or _id(line.get("price"))  # pre-2025 shape
        or _id(line.get("plan"))
    )


def _checkout_price_ids(session: dict) -> list[str]:
    line_items = (session.get("line_items") or {}).get("data") or []
    return _unique([_line_price_id(item) for item in line_items] + _metadata_price_ids(session))


def _subscription_price_ids(subscription: dict) -> list[str]:
    items = (subscription.get("items") or {}).get("data") or []
    return _unique([_id(item.get("price")) or _id(item.get("plan")) for item in items] + _metadata_price_ids(subscription))


def _subscription_period_end(subscription: dict) -> str | None:
    ends = [item.get("current_period_end") for item in (subscription.get("items") or {}).get("data") or []]
    ends = [end for end in ends if isinstance(end, int)]
    return timestamp_iso(max(ends) if ends else subscription.get("current_period_end"))


def _invoice_subscription(invoice: dict) -> str | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id(details.get("subscription")) or _id(invoice.get("subscription"))


def _invoice_payment_intent(invoice: dict) -> str | None:
    for payment in (invoice.get("payments") or {}).get("data") or []:
        intent = _id((payment.get("payment") or {}).get("payment_intent"))
        if intent:
            return intent
    return _id(invoice.get("payment_intent"))


def _invoice_price_ids(invoice: dict) -> list[str]:
    lines = (invoice.get("lines") or {}).get("data") or []
    return _unique([_line_price_id(line) for line in lines] + _metadata_price_ids(invoice))


def _invoice_period_end(invoice: dict) -> str | None:
    ends = [(line.get("period") or {}).get("end") for line in (invoice.get("lines") or {}).get("data") or []]
    ends = [end for end in ends if isinstance(end, int)]
    return timestamp_iso(max(ends)) if ends else None


def _checkout_completed(session: dict, time: datetime) -> list[Fact]:
    if session.get("payment_status") != "paid":
        return []
    details = session.get("customer_details") or {}
    user_id = session.get("client_reference_id") or (session.get("metadata") or {}).get("user_id")
    subscription = _id(session.get("subscription"))
    payment_intent = _id(session.get("payment_intent"))
    return [
        Fact(
            type="payhook.payment.succeeded.v1",
            subject=subscription or payment_intent or session["id"],
            time=time,
            data={
                "buyer": buyer(
                    user_id=user_id,
                    provider_customer_id=_id(session.get("customer")),
                    email=details.get("email") or session.get("customer_email"),
                ),
                "payment_intent": payment_intent,
                "source_object": session["id"],
                "subscription": subscription,
                "price_ids": _checkout_price_ids(session),
                "amount": session.get("amount_total"),
                "currency": session.get("currency"),
                "access_until": None,
            },
        )
    ]


def _invoice_buyer(invoice: dict) -> dict:
    return buyer(
        user_id=(invoice.get("metadata") or {}).get("user_id"),
        provider_customer_id=_id(invoice.get("customer")),
        email=invoice.get("customer_email"),
    )


def _invoice_paid(invoice: dict, time: datetime) -> list[Fact]:
    subscription = _invoice_subscription(invoice)
    payment_intent = _invoice_payment_intent(invoice)
    return [
        Fact(
            type="payhook.payment.succeeded.v1",
            subject=subscription or payment_intent or invoice["id"],
            time=time,
            data={
                "buyer": _invoice_buyer(invoice),
                "payment_intent": payment_intent,
                "source_object": invoice["id"],
                "subscription": subscription,
                "price_ids": _invoice_price_ids(invoice),
                "amount": invoice.get("amount_paid"),
                "currency": invoice.get("currency"),
                "access_until": _invoice_period_end(invoice) if subscription else None,
            },
        )
    ]


def _invoice_payment_failed(invoice: dict, time: datetime) -> list[Fact]:
    return [
        Fact(
            type="payhook.payment.failed.v1",
            subject=invoice["id"],
            time=time,
            data={
                "buyer": _invoice_buyer(invoice),
                "payment_intent": _invoice_payment_intent(invoice),
                "invoice": invoice["id"],
                "subscription": _invoice_subscription(invoice),
                "amount": invoice.get("amount_due"),
                "currency": invoice.get("currency"),
            },
        )
    ]


def _subscription_buyer(subscription: dict) -> dict:
    return buyer(
        user_id=(subscription.get("metadata") or {}).get("user_id"),
        provider_customer_id=_id(subscription.get("customer")),
    )


def _subscription_changed(subscription: dict, time: datetime, *, deleted: bool = False) -> list[Fact]:
    status = subscription.get("status") or ""
    common = {
        "buyer": _subscription_buyer(subscription),
        "subscription": subscription["id"],
        "status": status,
        "price_ids": _subscription_price_ids(subscription),
    }
    if deleted or status in ENDED_SUBSCRIPTION:
        return [Fact(type="payhook.subscription.canceled.v1", subject=subscription["id"], time=time, data=common)]
    if status in ACTIVE_SUBSCRIPTION:
        return [
            Fact(
                type="payhook.subscription.activated.v1",
                subject=subscription["id"],
                time=time,
                data={**common, "current_period_end": _subscription_period_end(subscription)},
            )
        ]
    return []  # past_due, incomplete: access is unchanged until Stripe decides


def _charge_refunded(charge: dict, time: datetime) -> list[Fact]:
    amount, refunded = charge.get("amount"), charge.get("amount_refunded")
    full = bool(charge.get("refunded")) or (isinstance(amount, int) and isinstance(refunded, int) and refunded >= amount > 0)
    return [
        Fact(
            type="payhook.payment.refunded.v1",
            subject=_id(charge.get("payment_intent")) or charge["id"],
            time=time,
            data={
                "buyer": buyer(
                    user_id=(charge.get("metadata") or {}).get("user_id"),
                    provider_customer_id=_id(charge.get("customer")),
                ),
                "payment_intent": _id(charge.get("payment_intent")),
                "charge": charge["id"],
                "amount": amount,
                "amount_refunded": refunded,
                "currency": charge.get("currency"),
                "full": full,
            },
        )
    ]


def _dispute_created(dispute: dict, time: datetime) -> list[Fact]:
    return [
        Fact(
            type="payhook.dispute.opened.v1",
            subject=_id(dispute.get("payment_intent")) or dispute["id"],
            time=time,
            data={
                "payment_intent": _id(dispute.get("payment_intent")),
                "charge": _id(dispute.get("charge")),
                "dispute": dispute["id"],
                "amount": dispute.get("amount"),
                "currency": dispute.get("currency"),
                "reason": dispute.get("reason"),
            },
        )
    ]


HANDLERS: dict[str, Callable[[dict, datetime], list[Fact]]] = {
    "checkout.session.completed": _checkout_completed,
    "invoice.paid": _invoice_paid,
    "invoice.payment_failed": _invoice_payment_failed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": lambda obj, time: _subscription_changed(obj, time, deleted=True),
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
}


def stripe_facts(payload: dict) -> list[Fact]:
    """The canonical facts of one Stripe event; [] for a type payhook does not fulfil."""
    event_type = payload.get("type")
    handler = HANDLERS.get(event_type) if isinstance(event_type, str) else None  # a signed list or dict is no type
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if handler is None or not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return []
    created = payload.get("created")
    time = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else datetime.now(UTC)
    return handler(obj, time)
