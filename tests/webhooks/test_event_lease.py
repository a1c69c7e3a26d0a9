"""Event leases: a worker holds the events it works on; a dead holder's events come back quickly."""

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.webhooks.factories import WebhookEventFactory
from webhooks import outbox, processing
from webhooks.models import WebhookEvent
from webhooks.outbox import webhook_event_retry_publish, webhook_events_dispatch
from webhooks.processing import _attempt_claim, lease_holder_name, webhook_events_lease
from webhooks.tasks import webhook_events_process

pytestmark = pytest.mark.django_db

LIVE_ELSEWHERE = "other-host:4242:cafe0000"


def _dead_pid_on_this_host() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leased(holder, seconds, **kwargs):
    return WebhookEventFactory(lease_holder=holder, lease_expires_at=timezone.now() + timedelta(seconds=seconds), **kwargs)


def test_a_batch_lease_takes_free_events_and_renews_its_own(settings):
    settings.WEBHOOK_LEASE_SECONDS = 30
    free, mine = WebhookEventFactory(), _leased(lease_holder_name(), 1)

    held = webhook_events_lease(event_ids=[str(free.id), str(mine.id)])

    assert held == {str(free.id), str(mine.id)}
    for event in (free, mine):
        event.refresh_from_db()
        assert event.lease_holder == lease_holder_name()
        assert event.lease_expires_at > timezone.now() + timedelta(seconds=25)
        assert event.status == "received", "leasing is not an attempt"


def test_a_live_lease_of_another_process_is_respected_until_it_lapses():
    live = _leased(LIVE_ELSEWHERE, 30, status="processing")
    lapsed = _leased(LIVE_ELSEWHERE, -1, status="processing")

    assert webhook_events_lease(event_ids=[str(live.id), str(lapsed.id)]) == {str(lapsed.id)}
    assert _attempt_claim(str(live.id)) is None
    live.refresh_from_db()
    assert (live.lease_holder, live.attempts) == (LIVE_ELSEWHERE, 0)


def test_finished_events_are_not_leased():
    done = [WebhookEventFactory(status=status) for status in ("processed", "ignored", "dead")]
    assert webhook_events_lease(event_ids=[str(event.id) for event in done]) == set()
    assert not WebhookEvent.objects.exclude(lease_holder="").exists()


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(caplog):
    dead_holder = f"{socket.gethostname()}:{_dead_pid_on_this_host()}:0badf00d"
    orphan = _leased(dead_holder, 30, status="processing", attempts=1)

    assert webhook_events_lease(event_ids=[str(orphan.id)]) == {str(orphan.id)}
    assert _attempt_claim(str(orphan.id)) == 2
    orphan.refresh_from_db()
    assert orphan.lease_holder == lease_holder_name()
    assert "lease taken over from a dead process" in caplog.text


def test_a_live_process_on_this_host_keeps_its_lease():
    # The test runner's own parent is alive: its lease is not taken.
    holder = f"{socket.gethostname()}:{os.getppid()}:12345678"
    event = _leased(holder, 30, status="processing")
    assert webhook_events_lease(event_ids=[str(event.id)]) == set()


def test_processing_clears_the_lease():
    event = WebhookEventFactory(event_type="customer.created")
    held = webhook_events_lease(event_ids=[str(event.id)])
    assert held == {str(event.id)}
    processing.webhook_event_process(event_id=str(event.id))
    event.refresh_from_db()
    assert event.status in ("processed", "ignored")
    assert (event.lease_holder, event.lease_expires_at) == ("", None)


def test_a_transient_failure_releases_the_lease():
    event = _leased(lease_holder_name(), 30, status="processing")
    processing.webhook_event_fail(event_id=str(event.id), exc=ConnectionError())
    event.refresh_from_db()
    assert (event.status, event.lease_holder, event.lease_expires_at) == ("failed", "", None)


class TestSweep:
    def test_it_republishes_events_whose_lease_lapsed_once_and_clears_the_lease(self, broker_flushed, caplog, settings):
        now = timezone.now()
        # A dead worker's message: one event mid-processing, one it had not reached yet.
        processing = _leased(LIVE_ELSEWHERE, -1, status="processing", dispatched_at=now, attempts=1)
        waiting = _leased(LIVE_ELSEWHERE, -1, status="received", dispatched_at=now)
        retrying = _leased(LIVE_ELSEWHERE, -1, status="failed", dispatched_at=now)  # its retry's worker died
        _leased(LIVE_ELSEWHERE, 30, status="processing", dispatched_at=now)  # its holder is alive

        assert webhook_events_dispatch() == 3
        assert broker_flushed.llen(settings.CELERY_TASK_DEFAULT_QUEUE) == 1  # one message of three ids
        for event in (processing, waiting, retrying):
            event.refresh_from_db()
            assert (event.lease_holder, event.lease_expires_at) == ("", None)
        assert "sweep republished 3 events whose worker lease lapsed" in caplog.text
        assert webhook_events_dispatch() == 0, "a lapse is republished once"

    def test_an_old_event_with_a_live_lease_is_left_to_its_holder(self, broker_flushed, settings):
        long_ago = timezone.now() - timedelta(hours=2)
        _leased(LIVE_ELSEWHERE, 30, status="processing", received_at=long_ago, dispatched_at=long_ago)
        assert webhook_events_dispatch() == 0

    def test_behind_a_backlog_an_unleased_event_waits_for_the_lost_after_delay(self, broker_flushed, settings):
        settings.WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS = 600
        broker_flushed.lpush(settings.CELERY_TASK_DEFAULT_QUEUE, b"{}")  # messages still wait in the queue
        recent, old = timezone.now() - timedelta(seconds=60), timezone.now() - timedelta(seconds=700)
        WebhookEventFactory(status="failed", received_at=recent, dispatched_at=recent)
        lost = WebhookEventFactory(status="failed", received_at=old, dispatched_at=old)
        assert webhook_events_dispatch() == 1
        lost.refresh_from_db()
        assert lost.dispatched_at > recent


class TestTheProcessingTask:
    def test_it_leases_the_whole_message_before_the_first_event_and_renews_while_working(self, settings, monkeypatch):
        settings.WEBHOOK_LEASE_SECONDS = 1  # renewed every third of a second
        settings.WEBHOOK_FULFIL_BATCH_MIN_EVENTS = 10**6  # the one-by-one path, where renewal matters
        events = [WebhookEventFactory() for _ in range(3)]
        ids = [str(event.id) for event in events]
        seen = []

        def process(*, event_id):
            seen.append({str(e.id): (e.lease_holder, e.lease_expires_at) for e in WebhookEvent.objects.filter(id__in=ids)})
            time.sleep(0.4)

        monkeypatch.setattr(processing, "webhook_event_process", process)
        webhook_events_process(ids)

        first, last = seen[0], seen[-1]
        # Before the first event was worked on, every event of the message was held by this process.
        assert {holder for holder, _ in first.values()} == {lease_holder_name()}
        # The events still waiting got their lease renewed while the earlier ones were worked on.
        assert last[ids[2]][1] > first[ids[2]][1]

    def test_it_skips_events_another_live_process_holds(self, monkeypatch):
        free, held_elsewhere = WebhookEventFactory(), _leased(LIVE_ELSEWHERE, 30)
        processed = []
        monkeypatch.setattr(processing, "webhook_event_process", lambda *, event_id: processed.append(event_id))

        webhook_events_process([str(free.id), str(held_elsewhere.id)])

        assert processed == [str(free.id)]


class TestSweepOfMessagesADeadWorkerTook:
    """A worker that dies between taking a message and leasing its events, or while holding a retry's
    delayed message, leaves them unleased with no message anywhere: once the queue is empty, the sweep
    republishes them WEBHOOK_REDISPATCH_AFTER_SECONDS after their message was due."""

    def test_with_the_queue_empty_an_unleased_event_overdue_by_the_grace_is_republished(self, broker_flushed, settings):
        settings.WEBHOOK_REDISPATCH_AFTER_SECONDS = 30
        overdue = timezone.now() - timedelta(seconds=31)
        taken = WebhookEventFactory(status="received", dispatched_at=overdue)  # delivered, never leased
        retry = WebhookEventFactory(status="failed", dispatched_at=overdue)  # its delayed message died
        WebhookEventFactory(status="received", dispatched_at=timezone.now() - timedelta(seconds=5))  # just sent

        assert webhook_events_dispatch() == 2
        assert broker_flushed.llen(settings.CELERY_TASK_DEFAULT_QUEUE) == 1
        for event in (taken, retry):
            event.refresh_from_db()
            assert event.dispatched_at > overdue

    def test_while_messages_wait_in_the_queue_it_waits_for_them(self, broker_flushed, settings):
        settings.WEBHOOK_REDISPATCH_AFTER_SECONDS = 30
        WebhookEventFactory(status="received", dispatched_at=timezone.now() - timedelta(seconds=31))
        broker_flushed.lpush(settings.CELERY_TASK_DEFAULT_QUEUE, b"{}")  # a backlog
        assert webhook_events_dispatch() == 0

    def test_a_scheduled_retry_is_due_only_after_its_delay(self, broker_flushed, settings):
        settings.WEBHOOK_REDISPATCH_AFTER_SECONDS = 30
        event = WebhookEventFactory(status="failed", dispatched_at=timezone.now() - timedelta(seconds=120))

        webhook_event_retry_publish(event_id=str(event.id), delay=60)

        event.refresh_from_db()
        assert event.dispatched_at > timezone.now() + timedelta(seconds=55)
        broker_flushed.delete(settings.CELERY_TASK_DEFAULT_QUEUE)  # a live worker holds the delayed message
        assert webhook_events_dispatch() == 0

    def test_a_broker_that_cannot_answer_leaves_only_the_backstop(self, settings, monkeypatch, caplog):
        settings.WEBHOOK_REDISPATCH_AFTER_SECONDS = 30
        WebhookEventFactory(status="received", dispatched_at=timezone.now() - timedelta(seconds=31))
        monkeypatch.setattr(outbox, "current_app", None)  # any failure to reach the broker

        assert webhook_events_dispatch() == 0
        assert "sweep could not read the queue length (AttributeError)" in caplog.text
