import logging

from celery import shared_task

from webhooks import services

logger = logging.getLogger(__name__)


@shared_task(name="webhooks.tasks.webhook_events_process", acks_late=True, reject_on_worker_lost=True)
def webhook_events_process(event_ids: list[str]) -> None:
    """Fulfil a batch of stored events, each in its own transaction."""
    for event_id in event_ids:
        services.webhook_event_process(event_id=event_id)


@shared_task(name="webhooks.tasks.webhook_events_dispatch")
def webhook_events_dispatch() -> int:
    """Periodic sweep (beat): publish stored events that never reached the broker."""
    return services.webhook_events_dispatch()
