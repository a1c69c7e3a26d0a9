"""The notification templates payhook can send: name → category and the context keys it may use.

Each template's texts live in `templates/notifications/<name>/`: `subject.txt`, `email.txt`
(plain text, required), `email.html` (optional alternative) and `in_app.txt`.

`context_keys` is an allowlist: anything else a caller passes is dropped before the context is
stored or rendered, so a personal value handed over by mistake never reaches the database or an
inbox. Values the templates understand:
  entitlements     list of entitlement keys, e.g. ["pro", "reports"]
  expires_at       ISO 8601 date-time (or datetime) when granted access ends
  reason           why access ended: a key of REVOKE_REASONS (fulfillment's revoke_reason)
  amount           integer amount in the currency's minor unit (Stripe's convention)
  currency         ISO 4217 code, any case
  next_attempt_at  ISO 8601 date-time of the provider's next collection attempt
"""

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal

from django.template import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string
from django.utils.dateparse import parse_datetime

from notifications.exceptions import UnknownNotificationTemplate
from notifications.models import Category


@dataclass(frozen=True)
class NotificationTemplate:
    name: str
    category: str
    context_keys: frozenset[str]

    def path(self, part: str) -> str:
        return f"notifications/{self.name}/{part}"


NOTIFICATION_TEMPLATES: dict[str, NotificationTemplate] = {
    template.name: template
    for template in [
        NotificationTemplate("access_granted", Category.ACCESS, frozenset({"entitlements", "expires_at"})),
        NotificationTemplate("access_revoked", Category.ACCESS, frozenset({"entitlements", "reason"})),
        NotificationTemplate("payment_failed", Category.BILLING, frozenset({"amount", "currency", "next_attempt_at"})),
    ]
}

# ISO 4217 currencies without minor units that Stripe supports; everything else has two decimals
# (the three-decimal ones are not sold through our catalog).
_ZERO_DECIMAL_CURRENCIES = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
# Why access ended, as the user reads it; an unknown reason is simply not explained.
REVOKE_REASONS = {
    "refunded": "because the payment was refunded",
    "disputed": "because the payment is disputed",
    "subscription_ended": "because the subscription ended",
    "canceled": "because the subscription was canceled",
    "plan_changed": "because your plan changed",
    "expired": "because it expired",
}
_EMAIL_LIKE = re.compile(r"[^\s@]+@[^\s@]+")
_MAX_STRING = 200
_MAX_LIST = 50


def notification_template_get(name: str) -> NotificationTemplate:
    try:
        return NOTIFICATION_TEMPLATES[name]
    except KeyError:
        raise UnknownNotificationTemplate(f"no notification template {name!r}") from None


def notification_context_clean(*, template: NotificationTemplate, context: dict) -> dict:
    """Keep the allowlisted keys with JSON-safe, non-personal values; drop the rest silently.

    Dropping rather than raising keeps a fulfilment step from failing over a surplus key; the
    template simply renders without it.
    """
    cleaned = {}
    for key in template.context_keys:
        if key not in (context or {}):
            continue
        value = _value_clean(context[key])
        if value is not None:
            cleaned[key] = value
    return cleaned


def _value_clean(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, Decimal)):
        return value if not isinstance(value, Decimal) else str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        if len(value) > _MAX_STRING or _EMAIL_LIKE.search(value):
            return None
        return value
    if isinstance(value, (list, tuple)):
        items = [_value_clean(item) for item in value[:_MAX_LIST] if not isinstance(item, (list, tuple, dict))]
        return [item for item in items if item is not None]
    return None


def _render_context(context: dict) -> dict:
    """What the templates see: the stored context plus display forms of amounts and dates."""
    values = dict(context)
    for key, value in context.items():
        if key.endswith("_at") and isinstance(value, str):
            values[key] = parse_datetime(value) or value
    if isinstance(context.get("reason"), str):
        values["reason_text"] = REVOKE_REASONS.get(context["reason"], "")
    amount, currency = context.get("amount"), context.get("currency")
    if isinstance(amount, int) and isinstance(currency, str) and currency:
        if currency.lower() in _ZERO_DECIMAL_CURRENCIES:
            values["amount_display"] = f"{amount} {currency.upper()}"
        else:
            values["amount_display"] = f"{Decimal(amount) / 100:.2f} {currency.upper()}"
    return values


def notification_render(*, template: NotificationTemplate, part: str, context: dict, **extra) -> str:
    text = render_to_string(template.path(part), {**_render_context(context), **extra})
    if part == "subject.txt":
        # A header must be one line; templates end with a newline.
        return " ".join(text.split())[:200]
    return text.strip() + "\n"


def notification_render_optional(*, template: NotificationTemplate, part: str, context: dict, **extra) -> str | None:
    try:
        get_template(template.path(part))
    except TemplateDoesNotExist:
        return None
    return notification_render(template=template, part=part, context=context, **extra)
