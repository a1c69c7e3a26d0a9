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


def test_the_relay_thread_waits_a_poll_after_a_pass_that_did_not_fill_one_message(monkeypatch, settings):
    """At live rates a pass finds an event or two; publishing them at once would make one-event messages,
    which skip the set-based path. So only a full pass goes on at once."""
    from webhooks import relay as relay_module

    settings.WEBHOOK_DISPATCH_BATCH_SIZE = 20
    settings.WEBHOOK_RELAY_POLL_SECONDS = 0.05
    passes = iter([3, 25, 20, 0])
    log: list[str] = []
    relay = relay_module.OutboxRelay()

    def once():
        published = next(passes, None)
        if published is None:
            relay._stop.set()
            return 0
        log.append(f"pass {published}")
        return published

    monkeypatch.setattr(relay_module, "outbox_relay_once", once)
    monkeypatch.setattr(relay_module, "close_old_connections", lambda: None)
    monkeypatch.setattr(relay._stop, "wait", lambda timeout=None: log.append(f"wait {timeout}"))

    relay._run()

    # (the last wait follows the pass that stopped the thread)
    assert log == ["pass 3", "wait 0.05", "pass 25", "pass 20", "pass 0", "wait 0.05", "wait 0.05"]
