"""Issues 4 and 9 acceptance: a PII-heavy event set leaves no personal data in clear in any table
(but the user accounts themselves), in the worker's log, in the web process's log or in what
Sentry receives (from the web process and from the worker, through sentry-sdk's real transport to
a local capture server); nor does a dead letter of a third-party error that quotes the data."""

import json
import logging

import pytest
import sentry_sdk
from django.contrib.auth import get_user_model
from django.db import connection

from fulfillment.services import catalog_import
from tests.audit import pii
from tests.config.test_sentry import _items, _strings, capture_server, sentry_live  # noqa: F401 (fixtures)
from tests.conftest import as_client_headers, signed_headers
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import CATALOG
from tests.support.processes import wait_for, worker_start
from webhooks.deadletters import dead_letter_record
from webhooks.models import DeadLetter, WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

EMAIL = pii.PII_EMAIL
GUEST_EMAIL = "dave.guest@example.net"
NAME = pii.PII_NAME
PHONE = pii.PII_PHONE
STREET = pii.PII_STREET
NEEDLES = [*pii.PII_SHAPES, GUEST_EMAIL]
# Tables that legitimately hold personal data: the user accounts (and Django's own sessions).
EXEMPT_TABLES = {"auth_user", "django_session"}


def _pii_events(user_id: int) -> list[dict]:
    t = 1_790_000_000
    note = pii.pii_note()
    checkout = se.checkout_completed(session_id="cs_pii", created=t, price_id="price_pro", user_id=user_id,
                                     customer="cus_pii", payment_intent="pi_pii", email=EMAIL)
    details = checkout["data"]["object"]["customer_details"]
    details.update(name=NAME, phone=PHONE, address={"line1": STREET, "city": "Springfield", "country": "US",
                                                    "line2": None, "postal_code": "49007", "state": "OR"})
    checkout["data"]["object"]["metadata"].update(note=note, iban=pii.PII_IBAN, street=pii.PII_STREET_FOREIGN,
                                                  api_key=pii.PII_HEX_TOKEN)
    checkout["data"]["object"]["custom_fields"] = [{"key": "nickname", "text": {"value": note}},
                                                   {"key": "card", "numeric": {"value": pii.PII_CARD_NUMBER}}]
    checkout["data"]["object"]["description"] = note
    guest = se.checkout_completed(session_id="cs_guest", created=t + 1, price_id="price_addon", payment_intent="pi_guest",
                                  email=GUEST_EMAIL)
    refund = se.charge_refunded(charge_id="ch_pii", created=t + 2, payment_intent="pi_guest")
    billing = refund["data"]["object"]["billing_details"]
    billing.update(name=NAME, email=EMAIL, phone=PHONE)
    billing["address"]["line1"] = STREET
    refund["data"]["object"]["description"] = note
    refund["data"]["object"]["metadata"] = {"note": pii.PII_CARD_NUMBER, "email": pii.PII_EMAIL_QUOTED}
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


def _third_party_dead_letter(event_id: str) -> DeadLetter:
    """A library's error quoting the data, dead-lettered as processing would (with its traceback)."""
    import traceback

    note = pii.pii_note()
    try:
        json.loads(note)  # the JSON decoder's own message quotes nothing; the one below does
    except ValueError as inner:
        try:
            raise KeyError(f"no customer for {note}") from inner
        except KeyError as exc:
            return dead_letter_record(task_name="webhooks.tasks.webhook_events_process", event_id=event_id, args=[event_id],
                                      exc=exc, attempts=5, traceback_text="".join(traceback.format_exception(exc)))


def test_no_personal_data_in_clear_anywhere(client, stripe_endpoint, stripe_secret, worker_env, tmp_path, caplog, sentry_live):
    catalog_import(data=CATALOG)
    user = get_user_model().objects.create_user("carol", email=EMAIL)
    dsn = f"http://public@127.0.0.1:{sentry_live.server_address[1]}/1"
    env = {**worker_env, "DJANGO_LOG_LEVEL": "DEBUG", "SENTRY_DSN": dsn, "SENTRY_TRACES_SAMPLE_RATE": "1.0",
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
    # A third-party failure quoting the data: dead-lettered, and sent to Sentry as an exception and
    # as a log record with the data in its arguments (that record is the test's own doing, so the
    # web log is read before it; what the application logs is in there).
    web_log = caplog.text
    guest_event = WebhookEvent.objects.filter(status="processed").order_by("received_at").values_list("id", flat=True)[1]
    letter = _third_party_dead_letter(str(guest_event))
    logging.getLogger("payhook.acceptance").error("customer lookup failed for %s", pii.pii_note())
    try:
        raise ValueError(f"cannot bill {pii.pii_note()}")
    except ValueError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=10)

    database, worker_log = _database_text(), worker.log()
    assert "entitlement.granted" in database and "task.dead_lettered" in database  # the scan sees the audit rows
    assert letter.error_type == "KeyError" and letter.traceback.startswith("JSONDecodeError\n")
    sentry_items = _items(sentry_live.envelopes)
    sentry_text = "\n".join(text for item in sentry_items for text in _strings(item))
    # The scan sees the events: the exception (message withheld) and the log record (format only).
    assert "cannot bill" not in sentry_text and "ValueError" in sentry_text
    assert "customer lookup failed for %s" in sentry_text
    for where, text in (("database", database), ("worker log", worker_log), ("web log", web_log), ("sentry", sentry_text)):
        try:
            pii.assert_no_pii([text], NEEDLES)
        except AssertionError as exc:
            raise AssertionError(f"in the {where}: {exc}") from None
