"""A dead letter replayed twice after its cause is fixed produces each effect once."""

import pytest
from django.contrib.auth import get_user_model

from fulfillment.models import Entitlement
from fulfillment.services import catalog_import
from notifications.models import Notification
from tests.faults.invariants import invariants_check
from tests.fulfillment import stripe_events as se
from tests.support.processes import wait_for, worker_start
from webhooks.deadletters import dead_letter_replay
from webhooks.models import DeadLetter, WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _finished(event_id) -> bool:
    return WebhookEvent.objects.filter(id=event_id, status__in=["processed", "dead"]).exists()


def test_replaying_a_fixed_dead_letter_twice_applies_its_effects_once(
    broker_flushed, stripe_endpoint, post_events, fault_env, tmp_path
):
    buyer = get_user_model().objects.create_user("late", email="late@example.com")
    operator = get_user_model().objects.create_user("operator")
    worker = worker_start(fault_env, tmp_path / "worker.log", concurrency=1)
    try:
        [event_id] = post_events([se.checkout_completed(session_id="cs_late", created=1_790_000_000, price_id="price_new",
                                                        user_id=buyer.id, customer="cus_late", payment_intent="pi_late")])
        wait_for(lambda: _finished(event_id), timeout=60, message="the event dead-lettered")
        letter = DeadLetter.objects.get(event_id=event_id)
        assert letter.error_type == "PriceNotInCatalog"

        catalog_import(data={"products": [{"provider": "stripe", "price_id": "price_new", "entitlements": ["new"]}]})
        dead_letter_replay(dead_letter=letter, user=operator, note="price added to the catalog")
        wait_for(lambda: WebhookEvent.objects.get(id=event_id).status == "processed", timeout=60, message="replayed")
        letter.refresh_from_db()
        letter.status = DeadLetter.Status.OPEN  # an operator (or a second tab) replays it again
        letter.save(update_fields=["status"])
        first_done = WebhookEvent.objects.get(id=event_id).processed_at
        dead_letter_replay(dead_letter=letter, user=operator, note="again")
        wait_for(lambda: WebhookEvent.objects.filter(id=event_id, status="processed", processed_at__gt=first_done).exists(),
                 timeout=60, message="replayed twice")
    finally:
        worker.stop()

    assert list(Entitlement.objects.values_list("key", "status")) == [("new", "active")]
    assert Notification.objects.filter(event_id=event_id).count() == 2
    assert Notification.objects.filter(event_id=event_id, channel="email", status="sent").count() == 1
    counts = invariants_check(expected_events=1, mail_dir=tmp_path / "mail")
    assert counts["mail_messages"] == 1
    # The fault landed: the first run failed for good and was dead-lettered, in the worker's log too.
    assert "event dead-lettered" in worker.log()
