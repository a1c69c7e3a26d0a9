"""Issue 4 acceptance: a realistic Stripe sequence, each event delivered 2–3 times, shuffled, fulfilled
by real Celery worker processes on PostgreSQL and Redis."""

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from audit.models import AuditEntry
from fulfillment.models import Entitlement
from fulfillment.selectors import entitlement_list
from fulfillment.services import catalog_import
from notifications.models import Notification
from notifications.services import notification_preferences_update
from tests.conftest import as_client_headers, signed_headers
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import CATALOG
from tests.support.processes import wait_for, worker_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DONE = {"processed", "ignored", "dead"}


def _sequence(alice, bob) -> tuple[list[dict], list[dict]]:
    """(must arrive first, the rest) — the rest is shuffled with its redeliveries."""
    t = int(time.time()) - 3600
    alice_sub = {"subscription_id": "sub_A", "customer": "cus_A", "price_id": "price_pro", "user_id": alice.id}
    bob_sub = {"subscription_id": "sub_B", "customer": "cus_B", "price_id": "price_pro"}
    first = [
        # Bob's subscription is canceled before its created event arrives.
        se.subscription(event_type="customer.subscription.deleted", created=t + 900, status="canceled", **bob_sub),
    ]
    rest = [
        # Alice: checkout completed → invoice paid → subscription updated (the subscription grant)...
        se.checkout_completed(session_id="cs_A", created=t, price_id="price_pro", user_id=alice.id, customer="cus_A",
                              subscription="sub_A", email="alice@example.com"),
        se.invoice(event_type="invoice.paid", invoice_id="in_A1", created=t + 10, customer="cus_A", price_id="price_pro",
                   subscription="sub_A", payment_intent="pi_A1", email="alice@example.com"),
        se.subscription(event_type="customer.subscription.updated", created=t + 20, **alice_sub),
        # ...a one-off add-on that is refunded in full...
        se.checkout_completed(session_id="cs_A2", created=t + 30, price_id="price_addon", user_id=alice.id,
                              customer="cus_A", payment_intent="pi_A2"),
        se.charge_refunded(charge_id="ch_A2", created=t + 40, payment_intent="pi_A2", customer="cus_A"),
        # ...an export that is disputed...
        se.checkout_completed(session_id="cs_A3", created=t + 50, price_id="price_export", user_id=alice.id,
                              customer="cus_A", payment_intent="pi_A3"),
        se.dispute_created(dispute_id="dp_A3", created=t + 60, payment_intent="pi_A3", charge_id="ch_A3"),
        # ...and a failed renewal attempt, whose billing email Alice has switched off.
        se.invoice(event_type="invoice.payment_failed", invoice_id="in_A2", created=t + 70, customer="cus_A",
                   price_id="price_pro", subscription="sub_A"),
        # Bob (found by email): created and paid before the cancellation that already arrived.
        se.subscription(event_type="customer.subscription.created", created=t, **bob_sub),
        se.invoice(event_type="invoice.paid", invoice_id="in_B1", created=t + 5, customer="cus_B", price_id="price_pro",
                   subscription="sub_B", payment_intent="pi_B1", email="Bob@Example.com"),
    ]
    return first, rest


def test_shuffled_redelivered_sequence_converges_with_each_effect_once(
    client, stripe_endpoint, stripe_secret, worker_env, tmp_path
):
    catalog_import(data=CATALOG)
    User = get_user_model()
    alice = User.objects.create_user("alice", email="alice@example.com")
    bob = User.objects.create_user("bob", email="bob@example.com")
    notification_preferences_update(user=alice, preferences={"billing": {"email": False}}, actor=str(alice.id))
    mail_dir = tmp_path / "mail"
    env = {**worker_env, "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend", "EMAIL_FILE_PATH": str(mail_dir)}
    worker = worker_start(env, tmp_path / "worker.log", concurrency=2)
    try:
        first, rest = _sequence(alice, bob)
        rng = random.Random(20261125)
        deliveries = first + [event for event in rest for _ in range(rng.choice([2, 3]))]
        head, tail = deliveries[:1], deliveries[1:]
        rng.shuffle(tail)
        for event in head + tail:
            body = json.dumps(event).encode()
            response = client.generic("POST", "/webhooks/stripe/", body, content_type="application/json",
                                      **as_client_headers(signed_headers("stripe", stripe_secret, body)))
            assert response.status_code == 200, response.content
            if event is head[0]:
                # Let the cancellation be fulfilled first, so the created event really arrives after it.
                first_id = response.json()["event_id"]
                wait_for(lambda: WebhookEvent.objects.get(id=first_id).status in DONE, timeout=60, message="first event")
        wait_for(
            lambda: not WebhookEvent.objects.exclude(status__in=DONE).exists(), timeout=120, message="all events done"
        )
    finally:
        worker.stop()

    statuses = Counter(WebhookEvent.objects.values_list("status", flat=True))
    assert WebhookEvent.objects.count() == 1 + len(rest), "one stored row per distinct event"
    assert statuses == {"processed": 1 + len(rest)}, worker.log()[-4000:]

    # Final entitlements: the state the provider's latest facts imply.
    assert {r.key for r in entitlement_list(user_id=alice.id)} == {"pro", "reports"}
    assert {r.key: r.revoke_reason for r in Entitlement.objects.filter(customer__user=alice, status="revoked")} == {
        "addon": "refunded", "export": "disputed",
    }
    assert set(entitlement_list(user_id=bob.id)) == set()
    assert Entitlement.objects.filter(customer__user=bob, status="active").count() == 0
    assert Entitlement.objects.count() == len(set(Entitlement.objects.values_list("customer", "key", "source")))

    # One notification per (event, user, channel, template); preferences honoured.
    keys = list(Notification.objects.values_list("event_id", "user_id", "channel", "template"))
    assert len(keys) == len(set(keys)) > 0
    failed_email = Notification.objects.get(user=alice, template="payment_failed", channel="email")
    assert failed_email.status == "suppressed" and "preference" in failed_email.reason
    assert Notification.objects.get(user=alice, template="payment_failed", channel="in_app").status == "sent"
    assert Notification.objects.filter(user=alice, template="access_granted", channel="email", status="sent").exists()
    assert not Notification.objects.filter(status__in=["queued", "sending"]).exists()
    sent_emails = Notification.objects.filter(channel="email", status="sent").count()
    assert _emails_written(mail_dir) == sent_emails

    # Audit: each effect once, and one chain that verifies.
    granted = Counter(AuditEntry.objects.filter(action="entitlement.granted").values_list("dedup_key", flat=True))
    assert granted and max(granted.values()) == 1
    received = Counter(AuditEntry.objects.filter(action="webhook.received").values_list("event_id", flat=True))
    assert len(received) == 1 + len(rest) and set(received.values()) == {1}
    call_command("verify_audit_chain")


def _emails_written(mail_dir: Path) -> int:
    if not mail_dir.exists():
        return 0
    return sum(path.read_text().count("\nSubject: ") + path.read_text().startswith("Subject: ") for path in mail_dir.iterdir())
