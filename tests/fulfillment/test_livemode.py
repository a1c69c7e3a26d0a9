"""An endpoint's mode: a Stripe event from the other mode is stored and ignored, never fulfilled."""

import time

import pytest

from audit.models import AuditEntry
from fulfillment.models import Entitlement
from tests.fulfillment import stripe_events as se
from webhooks.models import WebhookEvent

T = int(time.time()) - 3600
pytestmark = pytest.mark.django_db


def _checkout(*, livemode: bool, session_id: str = "cs_1", alice=None) -> dict:
    event = se.checkout_completed(session_id=session_id, created=T, price_id="price_pro", user_id=alice.id,
                                  customer="cus_A", payment_intent=f"pi_{session_id}")
    event["livemode"] = livemode
    return event


def _ignored_entry(event_id: str) -> AuditEntry:
    return AuditEntry.objects.get(action="event.ignored", event_id=event_id)


def test_a_test_mode_event_on_a_live_endpoint_is_stored_and_ignored_with_the_reason(catalog, alice, deliver):
    event_id, status = deliver(_checkout(livemode=False, alice=alice))

    assert status == "ignored"
    assert WebhookEvent.objects.get(id=event_id).status == "ignored"
    assert Entitlement.objects.count() == 0
    assert _ignored_entry(event_id).data == {"type": "checkout.session.completed", "reason": "livemode_mismatch", "mode": "live"}


def test_a_live_event_on_a_live_endpoint_is_fulfilled(catalog, alice, deliver):
    event_id, status = deliver(_checkout(livemode=True, alice=alice))

    assert status == "processed"
    assert set(Entitlement.objects.values_list("key", flat=True)) == {"pro", "reports"}
    assert not AuditEntry.objects.filter(action="event.ignored", event_id=event_id).exists()


def test_a_test_endpoint_fulfils_test_events_and_ignores_live_ones(catalog, alice, deliver, stripe_endpoint):
    stripe_endpoint.mode = "test"
    stripe_endpoint.save()

    live_id, live_status = deliver(_checkout(livemode=True, session_id="cs_live", alice=alice))
    assert live_status == "ignored"
    assert Entitlement.objects.count() == 0
    assert _ignored_entry(live_id).data["reason"] == "livemode_mismatch"

    _, test_status = deliver(_checkout(livemode=False, session_id="cs_test", alice=alice))
    assert test_status == "processed"
    assert set(Entitlement.objects.values_list("key", flat=True)) == {"pro", "reports"}


def test_an_ignored_mismatch_stays_ignored_on_redelivery_and_replay(catalog, alice, deliver):
    from webhooks.processing import webhook_event_process

    event = _checkout(livemode=False, alice=alice)
    event_id, _ = deliver(event)
    deliver(event)
    WebhookEvent.objects.filter(id=event_id).update(status="received")  # an operator replay

    assert webhook_event_process(event_id=event_id) == "ignored"
    assert Entitlement.objects.count() == 0


def test_an_ignored_event_without_a_mismatch_carries_no_reason(catalog, deliver):
    from providers.stripe import samples

    event_id, status = deliver(samples.stripe_event("customer.created"))

    assert status == "ignored"
    assert _ignored_entry(event_id).data == {"type": "customer.created"}


def test_send_test_webhook_samples_match_the_endpoint_mode():
    from providers.stripe import samples

    assert samples.stripe_trigger_event("invoice.paid")["livemode"] is True
    assert samples.stripe_trigger_event("invoice.paid", livemode=False)["livemode"] is False
