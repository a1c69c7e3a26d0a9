"""Realistic Stripe events for fulfilment tests, built on Stripe's published example objects.

Each builder takes the published object (providers/stripe/samples.py, a copy of shared/fixtures) and sets only
the ids, customer, metadata, prices and times a scenario needs. `shape="legacy"` produces the
pre-2025 API shape where it differs (invoice.subscription / payment_intent / line.price,
subscription.current_period_end).
"""

from providers.stripe import samples


def _event(event_type: str, obj: dict, created: int, event_id: str | None = None) -> dict:
    return samples.stripe_event(event_type, obj, event_id=event_id, created=created)


def checkout_completed(
    *, session_id, created, price_id, customer=None, user_id=None, email=None, payment_intent=None,
    subscription=None, payment_status="paid", line_items=False,
):
    session = samples.stripe_object("checkout.session")
    session.update(
        id=session_id,
        mode="subscription" if subscription else "payment",
        customer=customer,
        client_reference_id=str(user_id) if user_id else None,
        payment_intent=payment_intent,
        subscription=subscription,
        payment_status=payment_status,
        status="complete",
        amount_total=2000,
        currency="usd",
        metadata={} if line_items else {"price_id": price_id},
    )
    session["customer_details"]["email"] = email
    if line_items:
        session["line_items"] = {"object": "list", "data": [{"id": "li_1", "object": "item", "price": {"id": price_id}}]}
    return _event("checkout.session.completed", session, created)


def invoice(*, event_type, invoice_id, created, customer, price_id, subscription=None, payment_intent=None,
            period_end=None, email=None, shape="current"):
    obj = samples.stripe_object("invoice")
    obj.update(id=invoice_id, customer=customer, customer_email=email, status="paid", amount_paid=2000, amount_due=2000)
    line = obj["lines"]["data"][0]
    line["period"] = {"start": created, "end": period_end or created + 30 * 86400}
    if shape == "legacy":
        obj["subscription"] = subscription
        obj["payment_intent"] = payment_intent
        obj["parent"] = None
        line["price"] = {"id": price_id, "object": "price"}
        line.pop("pricing", None)
    else:
        obj["parent"] = {"type": "subscription_details", "quote_details": None,
                         "subscription_details": {"metadata": None, "subscription": subscription}}
        line["pricing"] = {"type": "price_details", "price_details": {"price": price_id, "product": "prod_x"}}
        obj["payments"] = {"object": "list", "data": [
            {"id": "inpay_1", "object": "invoice_payment", "payment": {"type": "payment_intent", "payment_intent": payment_intent}}
        ]} if payment_intent else {"object": "list", "data": []}
    return _event(event_type, obj, created)


def subscription(*, event_type, subscription_id, created, customer, price_id, status="active", period_end=None,
                 shape="current", user_id=None):
    obj = samples.stripe_object("subscription")
    obj.update(id=subscription_id, customer=customer, status=status, metadata={"user_id": str(user_id)} if user_id else {})
    item = obj["items"]["data"][0]
    item["price"]["id"] = price_id
    item["plan"]["id"] = price_id
    item["subscription"] = subscription_id
    end = period_end or created + 30 * 86400
    if shape == "legacy":
        item.pop("current_period_end", None)
        obj["current_period_end"] = end
    else:
        item["current_period_end"] = end
    return _event(event_type, obj, created)


def charge_refunded(*, charge_id, created, payment_intent, customer=None, amount=2000, amount_refunded=2000):
    obj = samples.stripe_object("charge")
    obj.update(id=charge_id, payment_intent=payment_intent, customer=customer, amount=amount,
               amount_refunded=amount_refunded, refunded=amount_refunded >= amount)
    return _event("charge.refunded", obj, created)


def dispute_created(*, dispute_id, created, payment_intent, charge_id):
    obj = samples.stripe_object("dispute")
    obj.update(id=dispute_id, payment_intent=payment_intent, charge=charge_id, amount=2000, currency="usd")
    return _event("charge.dispute.created", obj, created)
