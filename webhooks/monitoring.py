"""Watching the service: periodic checks that warn the on-call (DLQ, the provisioning SLO) and the
gauges `/metrics` computes from the database at each scrape (docs/metrics.md)."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily

from config.metrics import scrape_collector_register
from webhooks.deadletters import EVENT_UNFINISHED, dead_letter_stats
from webhooks.models import WebhookEvent
from webhooks.slo import unprovisioned_payments

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


# Event ids in the warning line: enough to start from, short enough for one line.
SLO_LOG_IDS = 20


@shared_task(name="webhooks.monitoring.provisioning_slo_check")
def provisioning_slo_check() -> dict:
    """Log ONE WARNING line when payments wait past PROVISIONING_SLO_SECONDS without their
    entitlement: how many, the oldest's age and the event ids (ids only, newest first)."""
    report = unprovisioned_payments(limit=SLO_LOG_IDS)
    if report.count:
        more = f" (+{report.count - len(report.payments)} more)" if report.count > len(report.payments) else ""
        logger.warning(
            "provisioning SLO breached: %d payments unprovisioned past %d s, oldest %.0f s: events=%s%s",
            report.count, report.slo_seconds, report.oldest_age_seconds,
            ",".join(payment.event_id for payment in report.payments), more,
        )
    return {"count": report.count, "oldest_age_seconds": report.oldest_age_seconds}


class DatabaseGauges:
    """The gauges that describe the database, computed at scrape rather than kept per process: every
    process would otherwise report its own stale view. Indexed queries: (status, received_at) on
    events, (status, last_failed_at) on dead letters; the SLO check decrypts only events already past
    the SLO and unfinished, at most webhooks.slo.SLO_SCAN_LIMIT of them."""

    def collect(self):
        try:
            backlog = WebhookEvent.objects.filter(status__in=EVENT_UNFINISHED).count()
            stats = dead_letter_stats()
            report = unprovisioned_payments(limit=0)
        except DatabaseError as exc:
            # /metrics still answers with the process metrics; this gauge says what is missing.
            logger.warning("metrics: database gauges unavailable (%s)", type(exc).__name__)
            yield GaugeMetricFamily("payhook_database_gauges_up", "1 when the database gauges below were computed.", value=0)
            return
        yield GaugeMetricFamily("payhook_database_gauges_up", "1 when the database gauges below were computed.", value=1)
        yield GaugeMetricFamily(
            "payhook_events_backlog", "Stored events not finished (received, processing, failed).", value=backlog
        )
        yield GaugeMetricFamily(
            "payhook_oldest_unprocessed_event_age_seconds", "Age of the oldest unfinished event; 0 when none waits.",
            value=stats["oldest_unprocessed_event_age_seconds"] or 0.0,
        )
        yield GaugeMetricFamily("payhook_dead_letters_open", "Open dead letters (need an operator).", value=stats["open"])
        yield GaugeMetricFamily(
            "payhook_oldest_open_dead_letter_age_seconds", "Age of the oldest open dead letter; 0 when none.",
            value=stats["oldest_open_dead_letter_age_seconds"] or 0.0,
        )
        yield GaugeMetricFamily(
            "payhook_unprovisioned_payments",
            "Payments received more than PROVISIONING_SLO_SECONDS ago whose entitlement is not granted (webhooks/slo.py).",
            value=report.count,
        )
        yield GaugeMetricFamily(
            "payhook_oldest_unprovisioned_payment_age_seconds", "Age of the oldest unprovisioned payment; 0 when none.",
            value=report.oldest_age_seconds or 0.0,
        )
        yield GaugeMetricFamily(
            "payhook_provisioning_slo_seconds", "PROVISIONING_SLO_SECONDS, for alert expressions.",
            value=report.slo_seconds,
        )


database_gauges = DatabaseGauges()
scrape_collector_register(database_gauges)
