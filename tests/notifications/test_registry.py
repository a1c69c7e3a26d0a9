import datetime as dt

import pytest

from notifications.registry import (
    NOTIFICATION_TEMPLATES,
    notification_context_clean,
    notification_render,
    notification_template_get,
)


@pytest.mark.parametrize("name", sorted(NOTIFICATION_TEMPLATES))
@pytest.mark.parametrize("part", ["subject.txt", "email.txt", "in_app.txt"])
def test_every_template_renders_every_part(name, part):
    template = notification_template_get(name)
    text = notification_render(template=template, part=part, context={}, unsubscribe_url="https://x.invalid/u/")
    assert text.strip()
    assert "{{" not in text and "{%" not in text
    if part == "email.txt":
        assert "https://x.invalid/u/" in text


def test_the_context_keeps_only_allowlisted_non_personal_values():
    template = notification_template_get("access_granted")
    cleaned = notification_context_clean(
        template=template,
        context={
            "entitlements": ["pro", "ann@example.com", {"nested": 1}, 7],
            "expires_at": dt.datetime(2031, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
            "email": "ann@example.com",
            "name": "Ann Example",
        },
    )
    assert cleaned == {"entitlements": ["pro", 7], "expires_at": "2031-01-02T03:04:00+00:00"}


@pytest.mark.parametrize(
    "amount, currency, shown",
    [(1999, "usd", "19.99 USD"), (500, "JPY", "500 JPY"), (5, "eur", "0.05 EUR")],
)
def test_amounts_are_shown_in_major_units(amount, currency, shown):
    template = notification_template_get("payment_failed")
    text = notification_render(template=template, part="in_app.txt", context={"amount": amount, "currency": currency})
    assert f"of {shown}." in text


def test_html_in_values_is_not_interpreted_in_the_html_email():
    template = notification_template_get("access_granted")
    html = notification_render(template=template, part="email.html", context={"entitlements": ["<b>pro</b>"]}, unsubscribe_url="u")
    assert "&lt;b&gt;pro&lt;/b&gt;" in html


@pytest.mark.parametrize(
    "reason, shown",
    [
        ("refunded", "has ended because the payment was refunded."),
        ("subscription_ended", "has ended because the subscription ended."),
        ("something_new", "has ended."),
    ],
)
def test_revocations_explain_the_reasons_fulfilment_gives(reason, shown):
    template = notification_template_get("access_revoked")
    text = notification_render(template=template, part="in_app.txt", context={"entitlements": ["pro"], "reason": reason})
    assert text == f"Your access to pro {shown}\n"
