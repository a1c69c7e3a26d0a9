"""Lemon Squeezy webhook bodies for the tests, on the package's published-example objects."""

from datetime import UTC, datetime, timedelta

from providers.lemonsqueezy import samples


def at(seconds: float) -> str:
    """A Lemon Squeezy time `seconds` from now."""
    return samples.lemonsqueezy_time(datetime.now(UTC) + timedelta(seconds=seconds))


def order(event_name: str = "order_created", *, order_id: str = "1001", updated_at: str | None = None, status: str = "paid",
          variant_id=101, user_id=None, email: str = "johndoe@example.com", customer_id=77, total: int = 1199,
          refunded_amount: int = 0, test_mode: bool = False) -> dict:
    obj = samples.lemonsqueezy_object("orders")
    obj["id"] = order_id
    obj["attributes"].update(status=status, user_email=email, customer_id=customer_id, total=total,
                             refunded_amount=refunded_amount, updated_at=updated_at or at(-3600))
    obj["attributes"]["first_order_item"]["variant_id"] = variant_id
    custom = {"user_id": str(user_id)} if user_id is not None else None
    return samples.lemonsqueezy_event(event_name, obj, custom_data=custom, test_mode=test_mode)


def subscription(event_name: str = "subscription_created", *, subscription_id: str = "501", updated_at: str | None = None,
                 status: str = "active", variant_id=202, user_id=None, email: str = "johndoe@example.com", customer_id=77,
                 renews_at: str | None = None, ends_at: str | None = None, trial_ends_at: str | None = None,
                 pause: dict | None = None) -> dict:
    obj = samples.lemonsqueezy_object("subscriptions")
    obj["id"] = subscription_id
    obj["attributes"].update(status=status, variant_id=variant_id, user_email=email, customer_id=customer_id,
                             renews_at=renews_at or at(30 * 86400), ends_at=ends_at, trial_ends_at=trial_ends_at,
                             pause=pause, cancelled=status == "cancelled", updated_at=updated_at or at(-3600))
    custom = {"user_id": str(user_id)} if user_id is not None else None
    return samples.lemonsqueezy_event(event_name, obj, custom_data=custom)


def invoice(event_name: str = "subscription_payment_success", *, invoice_id: str = "9001", subscription_id=501,
            updated_at: str | None = None, status: str = "paid", custom_data: dict | None = None, total: int = 999,
            refunded_amount: int = 0) -> dict:
    obj = samples.lemonsqueezy_object("subscription-invoices")
    obj["id"] = invoice_id
    obj["attributes"].update(subscription_id=subscription_id, status=status, total=total, refunded_amount=refunded_amount,
                             updated_at=updated_at or at(-3600))
    return samples.lemonsqueezy_event(event_name, obj, custom_data=custom_data)
