"""The outbox relay claims stored events in batches, marks them and commits, then publishes them (after the commit: a worker must find them unlocked)."""

import json

import pytest

from tests.conftest import celery_queue
from tests.webhooks.factories import WebhookEventFactory
from webhooks.models import WebhookEvent
from webhooks.relay import outbox_relay_once

pytestmark = pytest.mark.django_db


def _args(raw: bytes) -> list[str]:
    import base64

    message = json.loads(raw)
    body = json.loads(base64.b64decode(message["body"]))
    return body[0][0]


def test_relay_publishes_undispatched_events_in_batches_and_marks_them(settings, broker_flushed):
    settings.WEBHOOK_DISPATCH_BATCH_SIZE = 2
    events = [WebhookEventFactory() for _ in range(3)]

    assert outbox_relay_once() == 3

    batches = [_args(raw) for raw in reversed(broker_flushed.lrange(celery_queue(), 0, -1))]
    assert sorted(map(len, batches)) == [1, 2]
    assert sorted(i for batch in batches for i in batch) == sorted(str(e.id) for e in events)
    assert not WebhookEvent.objects.filter(dispatched_at__isnull=True).exists()
    assert outbox_relay_once() == 0, "a dispatched event is not published again"


def test_relay_leaves_finished_and_already_dispatched_events_alone(broker_flushed):
    WebhookEventFactory(status="processed")
    WebhookEventFactory(status="dead")

    assert outbox_relay_once() == 0
    assert broker_flushed.llen(celery_queue()) == 0


def test_a_failed_publish_leaves_the_events_for_the_next_pass(monkeypatch, broker_flushed):
    event = WebhookEventFactory()

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr("webhooks.relay.webhook_events_publish", broker_down)
    with pytest.raises(ConnectionRefusedError):
        outbox_relay_once()

    event.refresh_from_db()
    assert event.dispatched_at is None
    monkeypatch.undo()
    assert outbox_relay_once() == 1
