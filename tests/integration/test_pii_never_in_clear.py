"""Issue 4 acceptance: a PII-heavy event set leaves no personal data in clear in any table (but the
user accounts themselves), in the worker's log or in the web process's log."""

import json
import logging

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from fulfillment.services import catalog_import
from tests.conftest import as_client_headers, signed_headers
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import CATALOG
from tests.support.processes import wait_for, worker_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

EMAIL = "carol.personal@example.org"
GUEST_EMAIL = "dave.guest@example.net"
NAME = "Carolina Quintessa Smith"
PHONE = "+1 415 555 0199"
STREET = "742 Evergreen Terrace"
CARD = "4242 4242 4242 4242"
IP = "203.0.113.77"
IPV6 = "2001:db8::8a2e:370:7334"
TOKEN = "sk_live_51HfakeSecretToken0123456789abcdef"
NEEDLES = [EMAIL, GUEST_EMAIL, NAME, PHONE, STREET, CARD, CARD.replace(" ", ""), IP, IPV6, TOKEN]
# Tables that legitimately hold personal data: the user accounts (and Django's own sessions).
EXEMPT_TABLES = {"auth_user", "django_session"}


def _pii_events(user_id: int) -> list[dict]:
    t = 1_790_000_000
    note = f"call {NAME} on {PHONE}, card {CARD}, from {IP} / {IPV6}, key {TOKEN}, mail {EMAIL}"
    checkout = se.checkout_completed(session_id="cs_pii", created=t, price_id="price_pro", user_id=user_id,
                                     customer="cus_pii", payment_intent="pi_pii", email=EMAIL)
    details = checkout["data"]["object"]["customer_details"]
    details.update(name=NAME, phone=PHONE, address={"line1": STREET, "city": "Springfield", "country": "US",
                                                    "line2": None, "postal_code": "49007", "state": "OR"})
    checkout["data"]["object"]["metadata"]["note"] = note
    checkout["data"]["object"]["custom_fields"] = [{"key": "nickname", "text": {"value": note}}]
    guest = se.checkout_completed(session_id="cs_guest", created=t + 1, price_id="price_addon", payment_intent="pi_guest",
                                  email=GUEST_EMAIL)
    refund = se.charge_refunded(charge_id="ch_pii", created=t + 2, payment_intent="pi_guest")
    billing = refund["data"]["object"]["billing_details"]
    billing.update(name=NAME, email=EMAIL, phone=PHONE)
    billing["address"]["line1"] = STREET
    refund["data"]["object"]["description"] = note
    unknown_price = se.checkout_completed(session_id="cs_bad", created=t + 3, price_id=f"price_for_{EMAIL}",
                                          user_id=user_id, payment_intent="pi_bad", email=EMAIL)
    ignored = se.checkout_completed(session_id="cs_unpaid", created=t + 4, price_id="price_pro", email=EMAIL,
                                    payment_status="unpaid")
    return [checkout, guest, refund, unknown_price, ignored]


def _database_text() -> str:
    chunks = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cursor.fetchall():
            if table in EXEMPT_TABLES:
                continue
            cursor.execute(f'SELECT t::text FROM "{table}" t')
            chunks += [row[0] for row in cursor.fetchall()]
    return "\n".join(chunks)


def test_no_personal_data_in_clear_anywhere(client, stripe_endpoint, stripe_secret, worker_env, tmp_path, caplog):
    catalog_import(data=CATALOG)
    user = get_user_model().objects.create_user("carol", email=EMAIL)
    env = {**worker_env, "DJANGO_LOG_LEVEL": "DEBUG",
           "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend", "EMAIL_FILE_PATH": str(tmp_path / "mail")}
    worker = worker_start(env, tmp_path / "worker.log", concurrency=1)
    caplog.set_level(logging.DEBUG)
    try:
        for event in _pii_events(user.id):
            body = json.dumps(event).encode()
            response = client.generic("POST", "/webhooks/stripe/", body, content_type="application/json",
                                      **as_client_headers(signed_headers("stripe", stripe_secret, body)))
            assert response.status_code == 200
        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=60, message="events finished")
    finally:
        worker.stop()

    assert sorted(WebhookEvent.objects.values_list("status", flat=True)) == ["dead", "ignored", "processed", "processed", "processed"]
    database, worker_log, web_log = _database_text(), worker.log(), caplog.text
    assert "entitlement.granted" in database and "task.dead_lettered" in database  # the scan sees the audit rows
    for needle in NEEDLES:
        for where, text in (("database", database), ("worker log", worker_log), ("web log", web_log)):
            assert needle.lower() not in text.lower(), f"{needle!r} in clear in the {where}"
