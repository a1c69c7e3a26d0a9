"""Adyen adapter: maps the notification items payhook fulfils to canonical facts.

Only items with success "true" grant or revoke. AUTHORISATION is the payment moment: with automatic
capture (Adyen's default, and what most integrations fulfil on) an authorised payment is captured
without further action; a merchant on manual capture who must wait for the money would fulfil on
CAPTURE instead, which payhook does not do (CAPTURE is stored and ignored). REFUND, CANCEL_OR_REFUND
and CANCELLATION revoke what their `originalReference` (the payment's pspReference) granted; so does
CHARGEBACK, as a dispute. An unsuccessful AUTHORISATION is a failed payment. Everything else
(RECURRING_CONTRACT, REPORT_AVAILABLE, CAPTURE, NOTIFICATION_OF_CHARGEBACK, …) maps to no facts.
"""

from collections.abc import Callable
from datetime import UTC, datetime

from canonical.facts import Fact, buyer
from providers.base import event_time_utc

REVOKING_EVENT_CODES = ("REFUND", "CANCEL_OR_REFUND", "CANCELLATION")


def notification_items(payload: dict) -> list[dict]:
    """The NotificationRequestItem objects of a notification, in order (unreadable wrappers left out)."""
    wrappers = payload.get("notificationItems")
    if not isinstance(wrappers, list):
        return []
    items = [wrapper.get("NotificationRequestItem") for wrapper in wrappers if isinstance(wrapper, dict)]
    return [item for item in items if isinstance(item, dict)]


def item_key(item: dict) -> str:
    """The provider event id of one item: `<eventCode>:<pspReference>:<success>`."""
    return f"{item.get('eventCode')}:{item.get('pspReference')}:{item.get('success')}"


def item_find(payload: dict, provider_event_id: str) -> dict | None:
    """The item of a stored notification that the stored event `provider_event_id` is."""
    return next((item for item in notification_items(payload) if item_key(item) == provider_event_id), None)


def _str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _additional(item: dict) -> dict:
    additional = item.get("additionalData")
    return additional if isinstance(additional, dict) else {}


def _amount(item: dict) -> tuple[int | None, str | None]:
    amount = item.get("amount") if isinstance(item.get("amount"), dict) else {}
    value, currency = amount.get("value"), amount.get("currency")
    value = value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
    currency = currency.lower() if isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isalpha() else None
    return value, currency


def _buyer(item: dict) -> dict:
    # shopperReference is the merchant's own id for the shopper (payhook's user id); it is also
    # Adyen's only customer identity, so it keys the customer record until a user links.
    additional = _additional(item)
    shopper = _str(additional.get("shopperReference"))
    return buyer(user_id=shopper, provider_customer_id=shopper[:255] if shopper else None, email=additional.get("shopperEmail"))


def _price_ids(item: dict) -> list[str]:
    price = _additional(item).get("metadata.price_id")
    return [price.strip()] if isinstance(price, str) and price.strip() else []


def _authorised(item: dict, time: datetime) -> list[Fact]:
    psp = item["pspReference"]
    value, currency = _amount(item)
    return [
        Fact(
            type="payhook.payment.succeeded.v1",
            subject=psp,
            time=time,
            data={
                "buyer": _buyer(item),
                "payment_intent": psp,
                "source_object": psp,
                "subscription": None,
                "price_ids": _price_ids(item),
                "amount": value,
                "currency": currency,
                "access_until": None,
            },
        )
    ]


def _authorisation_failed(item: dict, time: datetime) -> list[Fact]:
    psp = item["pspReference"]
    value, currency = _amount(item)
    return [
        Fact(
            type="payhook.payment.failed.v1",
            subject=psp,
            time=time,
            data={
                "buyer": _buyer(item),
                "payment_intent": psp,
                # The merchant's order reference is what the buyer and support know the attempt by.
                "invoice": _str(item.get("merchantReference")) or psp,
                "subscription": None,
                "amount": value,
                "currency": currency,
            },
        )
    ]


def _refunded(item: dict, time: datetime) -> list[Fact]:
    original = _str(item.get("originalReference"))
    value, currency = _amount(item)
    return [
        Fact(
            type="payhook.payment.refunded.v1",
            subject=original or item["pspReference"],
            time=time,
            data={
                "buyer": _buyer(item),
                "payment_intent": original[:255] if original else None,
                "charge": item["pspReference"],
                # A modification notification carries only its own amount, not the payment's: payhook
                # cannot tell a partial refund from a full one, and revokes on either.
                "amount": None,
                "amount_refunded": value,
                "currency": currency,
                "full": True,
            },
        )
    ]


def _chargeback(item: dict, time: datetime) -> list[Fact]:
    original = _str(item.get("originalReference"))
    value, currency = _amount(item)
    reason = _str(_additional(item).get("chargebackReasonCode")) or _str(item.get("reason"))
    return [
        Fact(
            type="payhook.dispute.opened.v1",
            subject=original or item["pspReference"],
            time=time,
            data={
                "payment_intent": original[:255] if original else None,
                "charge": original[:255] if original else None,
                "dispute": item["pspReference"],
                "amount": value,
                "currency": currency,
                "reason": reason[:64] if reason else None,
            },
        )
    ]


HANDLERS: dict[tuple[str, str], Callable[[dict, datetime], list[Fact]]] = {
    ("AUTHORISATION", "true"): _authorised,
    ("AUTHORISATION", "false"): _authorisation_failed,
    **{(code, "true"): _refunded for code in REVOKING_EVENT_CODES},
    ("CHARGEBACK", "true"): _chargeback,
}


def event_date_parse(value) -> datetime | None:
    """An item's eventDate (ISO 8601 with offset, e.g. 2021-07-17T13:42:40+01:00), or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return event_time_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def adyen_facts(item: dict) -> list[Fact]:
    """The canonical facts of one NotificationRequestItem; [] for what payhook does not fulfil."""
    handler = HANDLERS.get((item.get("eventCode"), item.get("success")))
    if handler is None or not _str(item.get("pspReference")):
        return []
    return handler(item, event_date_parse(item.get("eventDate")) or datetime.now(UTC))
