import logging
import random
import time

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import InterfaceError, OperationalError
from structlog.contextvars import bind_contextvars, unbind_contextvars

from config import metrics, tracing
from webhooks import outbox, partitions, processing, retention
from webhooks.models import WebhookEvent
from webhooks.outbox import webhook_event_retry_publish
from webhooks.relay import OutboxRelay

logger = logging.getLogger(__name__)

# Worth retrying: the database or the network blinked. Anything else is a bug or bad data, and a
# retry would only repeat it: it goes to the dead-letter table at once.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


def retry_delay(attempt: int) -> float:
    """Exponential backoff with full jitter, capped below the broker's visibility timeout.

    A delayed message that outlives the visibility timeout would be redelivered to a second worker
    while the first still holds it, so the cap must stay under it (checked by a test).
    """
    cap = min(settings.CELERY_RETRY_BACKOFF_MAX_SECONDS, settings.CELERY_BROKER_VISIBILITY_TIMEOUT * 0.5)
    return random.uniform(0, min(cap, 2.0 ** max(attempt, 1)))


@shared_task(name="webhooks.tasks.webhook_events_process", acks_late=True, reject_on_worker_lost=True)
def webhook_events_process(event_ids: list[str]) -> None:
    """Fulfil a batch of stored events: together in one transaction when it can, else one by one.

    The batch is leased first, and the lease renewed while the batch is worked through, so if this
    process dies its events are republished by the sweep once the lease lapses (webhooks/outbox.py).
    The events never tried before are claimed in one statement and fulfilled together
    (`processing.webhook_events_fulfil`, set-based: a constant number of statements for the batch).
    If that raises, the whole batch rolled back and its events run one by one below, each in its own
    transaction, so a bad event dead-letters alone; so do events tried before (a retry, or the
    redelivery of a batch whose worker died). One by one, a transient failure re-queues only that
    event with backoff; the rest of the batch goes on.
    """
    traced = _events_traced(event_ids)
    try:
        held = processing.webhook_events_lease(event_ids=event_ids)
    except TRANSIENT_ERRORS as exc:  # the database is away: try the whole message again later
        delay = retry_delay(1)
        metrics.task_retries.labels(task=webhook_events_process.name).inc()
        logger.warning("event lease failed, batch will retry",
                       extra={"events": len(event_ids), "error": type(exc).__name__, "retry_in_seconds": round(delay, 1)})
        webhook_events_process.apply_async(args=[event_ids], countdown=delay)
        return
    renewed_at = time.monotonic()
    message_attempt = (webhook_events_process.request.retries or 0) + 1
    claimed, done = _together_fulfil([event_id for event_id in dict.fromkeys(event_ids) if event_id in held])
    for position, event_id in enumerate(event_ids):
        if event_id not in held or event_id in done:
            continue  # finished (here, together), or another live worker holds it
        if time.monotonic() - renewed_at > settings.WEBHOOK_LEASE_SECONDS / 3:
            try:
                held = processing.webhook_events_lease(event_ids=event_ids[position:])
            except TRANSIENT_ERRORS:
                pass  # the claim below fails the same way and retries this event
            renewed_at = time.monotonic()
        started = time.perf_counter()
        # Every line about this event, ours and the consumers', carries its id (the correlation id);
        # processing adds the event's `endpoint` and its own `attempt` counter. task_postrun clears all.
        bind_contextvars(event_id=event_id, correlation_id=event_id, attempt=message_attempt)
        try:
            endpoint, traceparent = traced.get(event_id, ("", ""))
            with tracing.event_scope(event_id=event_id, endpoint=endpoint, traceparent=traceparent):
                if event_id in claimed:  # its attempt is counted already: the batch it was claimed for failed
                    status = processing.webhook_event_process(event_id=event_id, attempts=claimed[event_id])
                else:
                    status = processing.webhook_event_process(event_id=event_id)
            if status and status != "dead":  # a dead letter logs its own warning
                logger.info("event %s", status, extra={"status": status})
        except TRANSIENT_ERRORS as exc:
            status = _retry_later(event_id, exc)
        except Exception as exc:  # a bug or unreadable data: no retry can fix it
            # No traceback in the log: messages can quote data; the dead letter keeps a scrubbed one.
            logger.error("event processing failed permanently", extra={"error": type(exc).__name__})
            status = processing.webhook_event_dead_letter(event_id=event_id, exc=exc)
        if status:  # None: nothing to do (finished already, or another worker holds it)
            metrics.event_processing_seconds.labels(status=status).observe(time.perf_counter() - started)
        unbind_contextvars("event_id", "correlation_id", "endpoint")


def _together_fulfil(event_ids: list[str]) -> tuple[dict[str, int], set[str]]:
    """Claim the first attempts among `event_ids` (held, in message order) and fulfil them together.

    Returns (the claimed events and their attempt counters, the events finished here). A claimed
    event that is not finished (the batch raised, or was too small) is for the one-by-one loop,
    which must not count its attempt again. With fewer than WEBHOOK_FULFIL_BATCH_MIN_EVENTS events
    nothing is claimed here: a lone event (the relay under light load) takes the one-by-one path.
    Metrics: `payhook_event_processing_seconds` gets the batch's time divided by its events, per event.
    Tracing: the task's span is the batch's (its `event_ids` attribute); no span per event here.
    """
    if len(event_ids) < max(settings.WEBHOOK_FULFIL_BATCH_MIN_EVENTS, 2):
        return {}, set()
    try:
        claimed = processing.webhook_events_claim(event_ids=event_ids)
    except TRANSIENT_ERRORS:
        return {}, set()  # the one-by-one claims meet the database again and retry as they do
    batch = [event_id for event_id in event_ids if event_id in claimed]
    if len(batch) < max(settings.WEBHOOK_FULFIL_BATCH_MIN_EVENTS, 2):
        return claimed, set()
    started = time.perf_counter()
    try:
        outcomes = processing.webhook_events_fulfil(event_ids=batch)
    except Exception as exc:  # noqa: BLE001 - rolled back; one by one says which event fails, and how
        logger.warning("event batch rolled back, its events run one by one",
                       extra={"events": len(batch), "error": type(exc).__name__})
        unbind_contextvars("event_id", "correlation_id", "endpoint")
        return claimed, set()
    per_event = (time.perf_counter() - started) / max(len(outcomes), 1)
    for event_id, endpoint, status in outcomes:
        bind_contextvars(event_id=event_id, correlation_id=event_id, attempt=claimed[event_id], endpoint=endpoint)
        logger.info("event %s", status, extra={"status": status})
        metrics.event_processing_seconds.labels(status=status).observe(per_event)
    unbind_contextvars("event_id", "correlation_id", "endpoint")
    # An event left out was locked by another worker, which finishes it: nothing more to do here either.
    return claimed, set(batch)


def _events_traced(event_ids: list[str]) -> dict[str, tuple[str, str]]:
    """With tracing on: each event's endpoint slug and stored traceparent, for its span (one query
    per message); nothing, and no query, when tracing is off."""
    if not tracing.tracing_enabled():
        return {}
    tracing.span_annotate(event_ids=event_ids)
    try:
        rows = WebhookEvent.objects.filter(id__in=event_ids).values_list("id", "endpoint__slug", "traceparent")
        return {str(event_id): (slug, traceparent) for event_id, slug, traceparent in rows}
    except Exception:  # tracing never stops processing: the lease below meets any database error again
        return {}


def _retry_later(event_id: str, exc: BaseException) -> str:
    """Retry the event later, or dead-letter it past WEBHOOK_MAX_ATTEMPTS; returns `retry` or `dead`."""
    try:
        processing.webhook_event_fail(event_id=event_id, exc=exc)
        attempts = processing.webhook_event_attempts(event_id=event_id)
    except TRANSIENT_ERRORS:
        attempts = 1  # the database is still away: the sweep or the redelivery will pick it up
    if attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        return processing.webhook_event_dead_letter(event_id=event_id, exc=exc)
    delay = retry_delay(attempts)
    metrics.task_retries.labels(task=webhook_events_process.name).inc()
    logger.warning("event processing will retry",
                   extra={"error": type(exc).__name__, "attempts": attempts, "retry_in_seconds": round(delay, 1)})
    try:
        webhook_event_retry_publish(event_id=event_id, delay=delay)
    except TRANSIENT_ERRORS:
        pass  # the sweep republishes the event once the queue is empty and its retry is overdue
    return "retry"


@shared_task(name="payhook.noop_probe", acks_late=True)
def noop_probe() -> None:
    """A benchmark and health probe: does nothing, takes no data. Its drain rate on a worker is the
    ceiling Celery itself puts on a task per message (bench/pipeline.py, phase `noop`)."""


@shared_task(name="webhooks.tasks.webhook_events_dispatch")
def webhook_events_dispatch() -> int:
    """Periodic sweep (beat): publish stored events that never reached the broker."""
    return outbox.webhook_events_dispatch()


_relay = None


@worker_ready.connect
def _outbox_relay_start(**kwargs) -> None:
    """Each worker's main process runs one outbox relay thread (webhooks/relay.py)."""
    global _relay
    if settings.WEBHOOK_RELAY_ENABLED and _relay is None:
        _relay = OutboxRelay()
        _relay.start()


@worker_shutdown.connect
def _outbox_relay_stop(**kwargs) -> None:
    if _relay is not None:
        _relay.stop()


@shared_task(name="webhooks.tasks.event_partitions_ensure")
def event_partitions_ensure() -> int:
    """Periodic (beat): the events table's monthly partitions for the months ahead (webhooks/partitions.py)."""
    return partitions.event_partitions_ensure()


@shared_task(name="webhooks.tasks.event_payloads_remove")
def event_payloads_remove() -> int:
    """Periodic (beat): empty the raw payloads of finished events past RAW_PAYLOAD_RETENTION_DAYS."""
    return retention.event_payloads_remove()
