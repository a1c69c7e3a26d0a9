"""The relay and the sweep publish only after their claim committed (the bench's start-up stall).

An idle worker takes a message within milliseconds. Published while the claiming transaction still
held its row locks, the message reached a worker whose lease skipped those rows (SKIP LOCKED): the
task found nothing to do, the message was acknowledged and its events stayed `received`, marked
dispatched, until the sweep. Here the "worker" leases the events, on its own database connection,
at the moment of the publish.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.webhooks.factories import WebhookEventFactory
from webhooks.models import WebhookEvent
from webhooks.outbox import webhook_events_dispatch
from webhooks.processing import webhook_events_lease
from webhooks.relay import outbox_relay_once

pytestmark = pytest.mark.django_db(transaction=True)


def _worker_takes_it_at_once(held: set):
    """A stand-in for webhook_events_publish: a worker (another thread, so another connection) leases
    the events of the message as it is published."""

    def publish(*, event_ids, traceparents=None):
        def lease():
            try:
                held.update(webhook_events_lease(event_ids=[str(event_id) for event_id in event_ids]))
            finally:
                connection.close()

        worker = threading.Thread(target=lease)
        worker.start()
        worker.join()

    return publish


def test_the_relay_publishes_events_a_worker_can_lease_at_once(monkeypatch):
    events = [WebhookEventFactory() for _ in range(3)]
    held: set = set()
    monkeypatch.setattr("webhooks.relay.webhook_events_publish", _worker_takes_it_at_once(held))

    assert outbox_relay_once() == 3

    assert held == {str(event.id) for event in events}, "published while the relay's row locks were held"
    assert not WebhookEvent.objects.filter(dispatched_at__isnull=True).exists()


def test_the_sweep_publishes_events_a_worker_can_lease_at_once(monkeypatch, settings, broker_flushed):
    settings.WEBHOOK_REDISPATCH_AFTER_SECONDS = 0
    events = [WebhookEventFactory(received_at=timezone.now() - timedelta(seconds=5)) for _ in range(2)]
    held: set = set()
    monkeypatch.setattr("webhooks.outbox.webhook_events_publish", _worker_takes_it_at_once(held))

    assert webhook_events_dispatch() == 2

    assert held == {str(event.id) for event in events}, "published while the sweep's row locks were held"


def test_a_failed_sweep_publish_gives_the_rows_back_for_the_next_pass(monkeypatch, settings, broker_flushed):
    settings.WEBHOOK_REDISPATCH_AFTER_SECONDS = 0
    lapsed_at = timezone.now() - timedelta(seconds=1)
    event = WebhookEventFactory(
        received_at=timezone.now() - timedelta(seconds=5), lease_holder="other-host:4242:cafe0000", lease_expires_at=lapsed_at
    )

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr("webhooks.outbox.webhook_events_publish", broker_down)
    with pytest.raises(ConnectionRefusedError):
        webhook_events_dispatch()

    event.refresh_from_db()
    assert (event.dispatched_at, event.lease_holder, event.lease_expires_at) == (None, "other-host:4242:cafe0000", lapsed_at)
    monkeypatch.undo()
    assert webhook_events_dispatch() == 1, "the lapsed lease is republished on the next pass"
