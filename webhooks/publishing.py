"""Handing stored events to Celery.

Messages name the processing task rather than import it: the task module imports the processing
services, and ingestion, the sweep and dead-letter replay all publish, so importing it here would
close an import cycle. The name is checked against the registered task by a test.
"""

from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.utils import timezone

from webhooks.models import WebhookEvent

PROCESS_TASK = "webhooks.tasks.webhook_events_process"
_WAITING = (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING, WebhookEvent.Status.FAILED)


def webhook_events_publish(*, event_ids: list) -> None:
    """Hand events to Celery, WEBHOOK_DISPATCH_BATCH_SIZE ids per message. Raises if the broker is
    away (no retry loop here: each caller has its own fallback — the relay's rollback, the sweep)."""
    ids = [str(event_id) for event_id in event_ids]
    batch_size = settings.WEBHOOK_DISPATCH_BATCH_SIZE
    for start in range(0, len(ids), batch_size):
        current_app.send_task(PROCESS_TASK, args=[ids[start : start + batch_size]], retry=False)


def webhook_event_retry_publish(*, event_id: str, delay: float) -> None:
    """Publish one event again, to run `delay` seconds from now, and record when it is due.

    A delayed message waits in the memory of the worker that took it, not in the queue; if that
    worker dies, the sweep sees the event unleased after its due time and republishes it.
    """
    current_app.send_task(PROCESS_TASK, args=[[str(event_id)]], countdown=delay)
    WebhookEvent.objects.filter(id=event_id, status__in=_WAITING, lease_expires_at__isnull=True).update(
        dispatched_at=timezone.now() + timedelta(seconds=delay)
    )
