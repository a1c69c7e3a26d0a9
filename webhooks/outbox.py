"""The outbox: stored events handed to Celery (by the relay, webhooks/relay.py, and by the sweep below,
its safety net) and retries scheduled.

Messages name the processing task rather than import it: the task module imports the processing
services, and ingestion, the sweep and dead-letter replay all publish, so importing it here would
close an import cycle. The name is checked against the registered task by a test.
"""

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import ChannelError

from config import tracing
from webhooks.models import WebhookEvent

logger = logging.getLogger(__name__)

PROCESS_TASK = "webhooks.tasks.webhook_events_process"
WAITING = (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING, WebhookEvent.Status.FAILED)  # not yet finished


def webhook_events_publish(*, event_ids: list, traceparents: dict[str, str] | None = None) -> None:
    """Hand events to Celery, WEBHOOK_DISPATCH_BATCH_SIZE ids per message. Raises if the broker is
    away (no retry loop here: each caller has its own fallback — the relay's rollback, the sweep).

    `traceparents` (event id → the stored `traceparent`): with tracing on, each message is published
    inside the trace of the request that stored its events, so a message holds one trace's events.
    """
    ids = [str(event_id) for event_id in event_ids]
    batch_size = settings.WEBHOOK_DISPATCH_BATCH_SIZE
    for traceparent, group in tracing.events_by_trace(ids, traceparents):
        with tracing.publish_scope(traceparent=traceparent, event_ids=group):
            for start in range(0, len(group), batch_size):
                current_app.send_task(PROCESS_TASK, args=[group[start : start + batch_size]], retry=False)


def webhook_event_retry_publish(*, event_id: str, delay: float) -> None:
    """Publish one event again, to run `delay` seconds from now, and record when it is due.

    A delayed message waits in the memory of the worker that took it, not in the queue; if that
    worker dies, the sweep sees the event unleased after its due time and republishes it.
    """
    current_app.send_task(PROCESS_TASK, args=[[str(event_id)]], countdown=delay)
    WebhookEvent.objects.filter(id=event_id, status__in=WAITING, lease_expires_at__isnull=True).update(
        dispatched_at=timezone.now() + timedelta(seconds=delay)
    )


def _queue_empty() -> bool:
    """True when the broker's queue holds no message (False when the broker cannot say)."""
    try:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)  # never the default: retry forever
            try:
                return conn.default_channel.queue_declare(queue=settings.CELERY_TASK_DEFAULT_QUEUE, passive=True).message_count == 0
            except ChannelError:  # Redis keeps no empty list: a queue never filled, or drained
                return True
    except Exception as exc:  # the broker is away: only the lost-message backstop applies
        logger.warning("sweep could not read the queue length (%s)", type(exc).__name__)
        return False


def webhook_events_dispatch(*, limit: int = 1000) -> int:
    """The sweep, a safety net behind the outbox relay: republish what is stuck. Returns how many.

    Picks, oldest first:
    - `received` events no relay published within WEBHOOK_REDISPATCH_AFTER_SECONDS;
    - events whose worker lease lapsed (the holder died: its message stays unacknowledged in the
      broker until the visibility timeout, an hour); the lease is cleared so each lapse is
      republished once, and the event can be claimed at once;
    - when the queue is empty, unleased events whose message was due more than
      WEBHOOK_REDISPATCH_AFTER_SECONDS ago: nothing waits in the queue, so the message was taken by a
      worker that died before leasing it (a crash between delivery and lease, or a retry's delayed
      message held by the dead worker), or the broker lost it;
    - whatever the queue holds, unleased events whose message must be lost (due more than
      WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS ago): the backstop while a backlog never drains.
    Rows a worker is processing right now are row-locked and skipped. A message sent twice is
    harmless: processing claims each event once and skips finished ones.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_AFTER_SECONDS)
    lost = now - timedelta(seconds=settings.WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS)
    Status = WebhookEvent.Status
    waiting = Q(status__in=WAITING)
    unpublished = Q(status=Status.RECEIVED, dispatched_at__isnull=True, received_at__lt=grace)
    lease_lapsed = waiting & Q(lease_expires_at__lt=now)
    unleased = waiting & Q(lease_expires_at__isnull=True)
    message_lost = unleased & Q(received_at__lt=lost) & (Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=lost))
    stuck = unpublished | lease_lapsed | message_lost
    if _queue_empty():
        stuck |= unleased & Q(dispatched_at__lt=grace)
    with transaction.atomic():
        rows = list(
            WebhookEvent.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(stuck)
            .order_by("received_at")
            .values_list("id", "lease_expires_at", "traceparent", "dispatched_at", "lease_holder")[:limit]
        )
        if not rows:
            return 0
        event_ids = [row[0] for row in rows]
        WebhookEvent.objects.filter(id__in=event_ids).update(dispatched_at=now, lease_holder="", lease_expires_at=None)
    # Published after the commit, never under the row locks: a worker's lease skips locked rows, so a
    # message taken before the commit would be acknowledged with its events untouched (webhooks/relay.py).
    try:
        webhook_events_publish(event_ids=event_ids, traceparents={str(row[0]): row[2] for row in rows})
    except Exception:  # the broker is away: the rows get back what they had, for the next pass
        _dispatch_undo(rows, marked_at=now)
        raise
    lapsed = sum(1 for _, expires, *_ in rows if expires is not None and expires < now)
    if lapsed:
        logger.warning("sweep republished %d events whose worker lease lapsed", lapsed)
    logger.info("sweep dispatched %d stored events", len(event_ids))
    return len(event_ids)


def _dispatch_undo(rows: list[tuple], *, marked_at) -> None:
    """Restore the sweep's rows (id, lease_expires_at, traceparent, dispatched_at, lease_holder) after a
    failed publish, each only if still as the sweep marked it (no worker has leased or finished it since)."""
    with transaction.atomic():
        for event_id, lease_expires_at, _, dispatched_at, lease_holder in rows:
            WebhookEvent.objects.filter(
                id=event_id, status__in=WAITING, dispatched_at=marked_at, lease_expires_at__isnull=True
            ).update(dispatched_at=dispatched_at, lease_holder=lease_holder, lease_expires_at=lease_expires_at)
