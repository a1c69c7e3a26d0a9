"""PayPal adapter: maps the PayPal webhook events payhook fulfils to canonical facts.

The payment reference (the canonical `payment_intent`) is the CAPTURE id: it is what a refund
(`PAYMENT.CAPTURE.REFUNDED`: its `links` rel "up" points at the capture, or
`supplementary_data.related_ids.capture_id`) and a dispute (`disputed_transactions[].seller_transaction_id`,
the capture's transaction id) name. `CHECKOUT.ORDER.COMPLETED` carries the order's captures and
items; `PAYMENT.CAPTURE.COMPLETED` carries the capture alone. Both facts of one purchase reference
the same capture, so fulfilment grants under one source (`payment:<capture id>`) once, whichever
arrives first or both. Amounts are PayPal's decimal strings converted to minor units.
"""

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from canonical.facts import Fact, buyer
from providers.base import rfc3339_parse

# PayPal's currencies without decimals (its currency-codes reference); the rest have two.
ZERO_DECIMAL_CURRENCIES = {"HUF", "JPY", "TWD"}
THREE_DECIMAL_CURRENCIES = {"BHD", "JOD", "KWD", "OMR", "TND"}
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_AMOUNT = re.compile(r"\d{1,15}(?:\.\d{1,3})?")
_PAYPAL_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
MAX_ID_LENGTH = 255
# PayPal subscription states -> the canonical ones fulfilment knows as ended (fulfillment.services.ENDED).
SUBSCRIPTION_ENDED_STATUS = {
    "BILLING.SUBSCRIPTION.CANCELLED": "canceled",
    "BILLING.SUBSCRIPTION.EXPIRED": "canceled",
    "BILLING.SUBSCRIPTION.SUSPENDED": "paused",
}


def _id(value: object) -> str | None:
    if isinstance(value, str) and value and len(value) <= MAX_ID_LENGTH and "\x00" not in value:
        return value
    return None


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _currency(code: object) -> str | None:
    return code.lower() if isinstance(code, str) and len(code) == 3 and code.isascii() and code.isalpha() else None


def minor_units(value: object, currency: object) -> int | None:
    """"10.00" USD -> 1000; "1000" JPY -> 1000. None when the amount cannot be read exactly."""
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value) or _currency(currency) is None:
        return None
    code = currency.upper()
    exponent = 0 if code in ZERO_DECIMAL_CURRENCIES else 3 if code in THREE_DECIMAL_CURRENCIES else 2
    try:
        minor = Decimal(value).scaleb(exponent)
    except InvalidOperation:
        return None
    return int(minor) if minor == minor.to_integral_value() else None


def _money(money: object) -> tuple[int | None, str | None]:
    """A v2 Money object ({currency_code, value}) or a v1 amount ({currency, total})."""
    money = _dict(money)
    currency = money.get("currency_code") or money.get("currency")
    return minor_units(money.get("value") or money.get("total"), currency), _currency(currency)


def _unique(ids) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i))


def _skus(purchase_unit: dict) -> list[str]:
    skus = []
    for item in _list(purchase_unit.get("items")):
        sku = _dict(item).get("sku")
        if isinstance(sku, str) and sku.strip() and len(sku.strip()) <= MAX_ID_LENGTH:
            skus.append(sku.strip())
    return _unique(skus)


def _payer_buyer(resource: dict, *, user_id: object = None) -> dict:
    payer = _dict(resource.get("payer"))
    return buyer(
        user_id=_id(resource.get("custom_id")) or _id(user_id),
        provider_customer_id=_id(payer.get("payer_id")),
        email=payer.get("email_address"),
    )


def _order_completed(order: dict, time: datetime) -> list[Fact]:
    """One payment per purchase unit with a COMPLETED capture (a pending or authorize-only unit has
    collected nothing yet). Buyer: `custom_id` of the order, else of the purchase unit."""
    units = [_dict(unit) for unit in _list(order.get("purchase_units"))]
    facts = []
    for index, unit in enumerate(units):
        captures = [_dict(c) for c in _list(_dict(unit.get("payments")).get("captures"))]
        capture = next((c for c in captures if c.get("status") == "COMPLETED" and _id(c.get("id"))), None)
        if capture is None:
            continue
        amount, currency = _money(capture.get("amount") or unit.get("amount"))
        facts.append(
            Fact(
                type="payhook.payment.succeeded.v1",
                subject=capture["id"],
                time=time,
                data={
                    "buyer": _payer_buyer(order, user_id=unit.get("custom_id")),
                    "payment_intent": capture["id"],
                    "source_object": order["id"],
                    "subscription": None,
                    "price_ids": _skus(unit),
                    "amount": amount,
                    "currency": currency,
                    "access_until": None,
                },
                suffix=f"unit{index}" if len(units) > 1 else "",
            )
        )
    return facts


def _capture_completed(capture: dict, time: datetime) -> list[Fact]:
    """PayPal's capture payload carries no items: its prices come from `purchase_units[].items[].sku`
    only when present. Without them fulfilment dead-letters it as naming no price (see docs)."""
    if capture.get("status") != "COMPLETED":
        return []
    amount, currency = _money(capture.get("amount"))
    related = _dict(_dict(capture.get("supplementary_data")).get("related_ids"))
    return [
        Fact(
            type="payhook.payment.succeeded.v1",
            subject=capture["id"],
            time=time,
            data={
                "buyer": _payer_buyer(capture),
                "payment_intent": capture["id"],
                "source_object": _id(related.get("order_id")) or capture["id"],
                "subscription": None,
                "price_ids": _unique(sku for unit in _list(capture.get("purchase_units")) for sku in _skus(_dict(unit))),
                "amount": amount,
                "currency": currency,
                "access_until": None,
            },
        )
    ]


def refund_capture_id(refund: dict) -> str | None:
    """The capture a refund refunds: its `links` rel "up" (…/v2/payments/captures/<id>), else
    `supplementary_data.related_ids.capture_id`."""
    for link in _list(refund.get("links")):
        link = _dict(link)
        if link.get("rel") != "up" or not isinstance(link.get("href"), str):
            continue
        segments = urlsplit(link["href"]).path.rstrip("/").split("/")
        if len(segments) >= 2 and segments[-2] == "captures" and _PAYPAL_ID.fullmatch(segments[-1]):
            return segments[-1]
    capture_id = _dict(_dict(refund.get("supplementary_data")).get("related_ids")).get("capture_id")
    return capture_id if isinstance(capture_id, str) and _PAYPAL_ID.fullmatch(capture_id) else None


def _capture_refunded(refund: dict, time: datetime) -> list[Fact]:
    """A COMPLETED refund counts as full: PayPal's refund does not carry the captured amount, so a
    partial refund cannot be told from a full one without calling PayPal (see docs)."""
    refunded, currency = _money(_dict(refund.get("seller_payable_breakdown")).get("total_refunded_amount"))
    if refunded is None:
        refunded, currency = _money(refund.get("amount"))
    capture_id = refund_capture_id(refund)
    return [
        Fact(
            type="payhook.payment.refunded.v1",
            subject=capture_id or refund["id"],
            time=time,
            data={
                # A refund's `payer` is the merchant, not the buyer.
                "buyer": buyer(user_id=_id(refund.get("custom_id"))),
                "payment_intent": capture_id,
                "charge": refund["id"],
                "amount": None,
                "amount_refunded": refunded,
                "currency": currency,
                "full": refund.get("status") == "COMPLETED",
            },
        )
    ]


def _dispute_created(dispute: dict, time: datetime) -> list[Fact]:
    dispute_id = _id(dispute.get("dispute_id")) or dispute["id"]
    amount, currency = _money(dispute.get("dispute_amount"))
    reason = dispute.get("reason")
    transactions = [_dict(t) for t in _list(dispute.get("disputed_transactions"))] or [{}]
    return [
        Fact(
            type="payhook.dispute.opened.v1",
            subject=_id(transaction.get("seller_transaction_id")) or dispute_id,
            time=time,
            data={
                "payment_intent": _id(transaction.get("seller_transaction_id")),
                "charge": _id(transaction.get("seller_transaction_id")),
                "dispute": dispute_id,
                "amount": amount,
                "currency": currency,
                "reason": reason[:64] if isinstance(reason, str) else None,
            },
            suffix=f"txn{index}" if len(transactions) > 1 else "",
        )
        for index, transaction in enumerate(transactions)
    ]


def _subscriber_buyer(subscription: dict) -> dict:
    subscriber = _dict(subscription.get("subscriber"))
    return buyer(
        user_id=_id(subscription.get("custom_id")),
        provider_customer_id=_id(subscriber.get("payer_id")),
        email=subscriber.get("email_address"),
    )


def _plan_price_ids(subscription: dict) -> list[str]:
    plan_id = _id(subscription.get("plan_id"))
    return [plan_id] if plan_id else []


def _subscription_activated(subscription: dict, time: datetime) -> list[Fact]:
    period_end = rfc3339_parse(_dict(subscription.get("billing_info")).get("next_billing_time"))
    return [
        Fact(
            type="payhook.subscription.activated.v1",
            subject=subscription["id"],
            time=time,
            data={
                "buyer": _subscriber_buyer(subscription),
                "subscription": subscription["id"],
                "status": "active",
                "price_ids": _plan_price_ids(subscription),
                "current_period_end": period_end.isoformat() if period_end else None,
            },
        )
    ]


def _subscription_ended(status: str) -> Callable[[dict, datetime], list[Fact]]:
    def handler(subscription: dict, time: datetime) -> list[Fact]:
        return [
            Fact(
                type="payhook.subscription.canceled.v1",
                subject=subscription["id"],
                time=time,
                data={
                    "buyer": _subscriber_buyer(subscription),
                    "subscription": subscription["id"],
                    "status": status,
                    "price_ids": _plan_price_ids(subscription),
                },
            )
        ]

    return handler


def _sale_denied(sale: dict, time: datetime) -> list[Fact]:
    """A v1 sale (a subscription's recurring payment): `custom` is the merchant's id, the
    `billing_agreement_id` the subscription."""
    amount, currency = _money(sale.get("amount"))
    return [
        Fact(
            type="payhook.payment.failed.v1",
            subject=sale["id"],
            time=time,
            data={
                "buyer": buyer(user_id=_id(sale.get("custom")) or _id(sale.get("custom_id"))),
                "payment_intent": sale["id"],
                "invoice": sale["id"],
                "subscription": _id(sale.get("billing_agreement_id")),
                "amount": amount,
                "currency": currency,
            },
        )
    ]


def _subscription_payment_failed(subscription: dict, time: datetime) -> list[Fact]:
    """PayPal has no invoice object: the subscription id stands in for it."""
    billing = _dict(subscription.get("billing_info"))
    amount, currency = _money(_dict(billing.get("last_failed_payment")).get("amount") or billing.get("outstanding_balance"))
    return [
        Fact(
            type="payhook.payment.failed.v1",
            subject=subscription["id"],
            time=time,
            data={
                "buyer": _subscriber_buyer(subscription),
                "payment_intent": None,
                "invoice": subscription["id"],
                "subscription": subscription["id"],
                "amount": amount,
                "currency": currency,
            },
        )
    ]


HANDLERS: dict[str, Callable[[dict, datetime], list[Fact]]] = {
    "CHECKOUT.ORDER.COMPLETED": _order_completed,
    "PAYMENT.CAPTURE.COMPLETED": _capture_completed,
    "PAYMENT.CAPTURE.REFUNDED": _capture_refunded,
    "CUSTOMER.DISPUTE.CREATED": _dispute_created,
    "BILLING.SUBSCRIPTION.ACTIVATED": _subscription_activated,
    "BILLING.SUBSCRIPTION.RE-ACTIVATED": _subscription_activated,
    **{event_type: _subscription_ended(status) for event_type, status in SUBSCRIPTION_ENDED_STATUS.items()},
    "PAYMENT.SALE.DENIED": _sale_denied,
    "BILLING.SUBSCRIPTION.PAYMENT.FAILED": _subscription_payment_failed,
}


def paypal_event_mode(payload: dict) -> str | None:
    """"test" for an event whose links point at PayPal's sandbox API, "live" for the live API, else None."""
    hosts = set()
    for link in _list(payload.get("links")):
        href = _dict(link).get("href")
        if isinstance(href, str) and len(href) <= 2048:
            hosts.add((urlsplit(href).hostname or "").lower())
    if any(host == "sandbox.paypal.com" or host.endswith(".sandbox.paypal.com") for host in hosts):
        return "test"
    if any(host == "paypal.com" or host.endswith(".paypal.com") for host in hosts):
        return "live"
    return None


def paypal_facts(payload: dict) -> list[Fact]:
    """The canonical facts of one PayPal event; [] for a type payhook does not fulfil."""
    handler = HANDLERS.get(payload.get("event_type"))
    resource = payload.get("resource")
    if handler is None or not isinstance(resource, dict):
        return []
    if not _id(resource.get("id")) and not _id(resource.get("dispute_id")):
        return []
    resource = {**resource, "id": _id(resource.get("id")) or resource["dispute_id"]}
    time = rfc3339_parse(payload.get("create_time")) or datetime.now(UTC)
    return handler(resource, time)
