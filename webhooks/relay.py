"""The outbox relay: publishes stored events to Celery in batches, from the worker, not the request.

The request only commits the row (`status=received`, `dispatched_at IS NULL`). A thread in each Celery
worker's main process claims such rows with SELECT … FOR UPDATE SKIP LOCKED (so several worker hosts
never publish one row twice) and marks them dispatched, commits, and only then publishes them as
messages of WEBHOOK_DISPATCH_BATCH_SIZE ids. Never publish while the claim's row locks are held: an
idle worker takes a message within milliseconds, its lease skips locked rows (SKIP LOCKED), and the
message is acknowledged with its events left `received` (the start-up stall, docs/benchmarks.md). If
the publish fails, the mark is undone and the next pass claims the rows again; a relay that dies
between commit and publish leaves them to the sweep (webhooks/outbox.py), as a lost message.

Measured in bench/ingest.py: publishing from the request cost more CPU than the rest of the request
together; the relay moves that cost off the provider's path and pays it once per batch.
"""

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from webhooks.models import WebhookEvent
from webhooks.outbox import webhook_events_publish

logger = logging.getLogger(__name__)


def outbox_relay_once(*, limit: int | None = None) -> int:
    """Claim and publish up to `limit` undispatched events. Returns how many were published."""
    limit = limit or settings.WEBHOOK_RELAY_BATCH_LIMIT
    with transaction.atomic():
        traceparents = {
            str(event_id): traceparent
            for event_id, traceparent in WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(status=WebhookEvent.Status.RECEIVED, dispatched_at__isnull=True)
            .order_by("received_at")
            .values_list("id", "traceparent")[:limit]
        }
        if not traceparents:
            return 0
        event_ids = list(traceparents)  # oldest first
        dispatched_at = timezone.now()
        WebhookEvent.objects.filter(id__in=event_ids).update(dispatched_at=dispatched_at)
    # After the commit (see above). Each message joins the trace of the request that stored its events.
    try:
        webhook_events_publish(event_ids=event_ids, traceparents=traceparents)
    except Exception:  # nothing, or not all, reached the broker: the next pass claims them again
        WebhookEvent.objects.filter(
            id__in=event_ids, status=WebhookEvent.Status.RECEIVED, dispatched_at=dispatched_at, lease_expires_at__isnull=True
        ).update(dispatched_at=None)
        raise
    return len(event_ids)


class OutboxRelay:
    """Runs `outbox_relay_once` in a daemon thread until stopped."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payhook-outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        idle = settings.WEBHOOK_RELAY_POLL_SECONDS
        backoff = idle
        while not self._stop.is_set():
            try:
                close_old_connections()
                published = outbox_relay_once()
                backoff = idle
            except Exception as exc:  # the database or the broker is away: wait, then try again
                logger.warning("outbox relay pass failed (%s); retrying in %.1fs", type(exc).__name__, backoff)
                connection.close()
                published = 0
                backoff = min(backoff * 2 or idle, 5.0)
            # A pass that did not fill one message waits a poll interval before the next, so that at
            # live rates a message carries the events of that interval (fulfilled together, the
            # set-based path) rather than one each, for at most WEBHOOK_RELAY_POLL_SECONDS more
            # latency. A full pass goes on at once: a backlog is published as fast as before.
            if published < settings.WEBHOOK_DISPATCH_BATCH_SIZE:
                self._stop.wait(backoff)
        connection.close()
