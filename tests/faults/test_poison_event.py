"""An event that kills its worker every time reaches the dead-letter table through the database
attempt counter; the events around it are fulfilled."""

import pytest

from tests.faults.invariants import invariants_check
from tests.support.processes import wait_for, worker_start
from webhooks.models import DeadLetter, WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_poison_event_is_dead_lettered_after_max_attempts(purchases, post_events, fault_env, tmp_path):
    events = purchases(6)
    events[2]["id"] = "evt_poison_1"
    worker = worker_start({**fault_env, "WEBHOOK_MAX_ATTEMPTS": "3"}, tmp_path / "worker.log", concurrency=1,
                          app="tests.support.poison_worker")
    try:
        ids = post_events(events)
        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=120, message="every event finished")
    finally:
        worker.stop()

    poison = WebhookEvent.objects.get(id=ids[2])
    assert poison.status == "dead"
    letter = DeadLetter.objects.get(event_id=poison.id)
    assert letter.status == "open"
    assert letter.attempts == 3
    # The fault landed three times: each kill's redelivery took over the dead process's lease at once.
    assert worker.log().count("WorkerLostError") >= 3
    assert worker.log().count("lease taken over from a dead process") >= 2, worker.log()[-3000:]
    counts = invariants_check(expected_events=6, mail_dir=tmp_path / "mail")
    assert (counts["status_processed"], counts["status_dead"]) == (5, 1)
    assert counts["entitlements"] == 2 * 5
    assert counts["emails_sent"] == 5 == counts["mail_messages"]
