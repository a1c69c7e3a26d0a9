"""Watching the failure path: a periodic check that warns the on-call before the DLQ grows stale."""

import logging

from celery import shared_task
from django.conf import settings

from webhooks.deadletters import dead_letter_stats

logger = logging.getLogger(__name__)


@shared_task(name="webhooks.monitoring.dead_letters_watch")
def dead_letters_watch() -> dict:
    """Log a WARNING when DLQ depth or the oldest unfinished event pass their thresholds.

    The log line carries counts and ages only: never an event's content or an error message.
    """
    stats = dead_letter_stats()
    depth_limit = settings.DLQ_WARN_DEPTH
    age_limit = settings.DLQ_WARN_OLDEST_SECONDS
    if stats["open"] >= depth_limit:
        logger.warning("dead-letter queue depth %d (threshold %d)", stats["open"], depth_limit)
    oldest = stats["oldest_unprocessed_event_age_seconds"]
    if oldest is not None and oldest >= age_limit:
        logger.warning("oldest unprocessed event is %.0f s old (threshold %d s)", oldest, age_limit)
    return stats
