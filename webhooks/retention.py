"""Raw-payload retention: finished events older than RAW_PAYLOAD_RETENTION_DAYS lose their encrypted
body and headers; their hash, ids, status and times stay (the audit trail and the idempotency key
still hold), but they can no longer be replayed. Run by beat (webhooks.tasks.event_payloads_remove)."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_entry_append
from config.exceptions import ApplicationError
from webhooks.models import WebhookEvent

# Only events whose work is over: never one still waiting for, or in, processing (nor a failed one,
# which will be retried).
FINISHED = (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED, WebhookEvent.Status.DEAD)
BATCH_SIZE = 1000


class PayloadRemoved(ApplicationError):
    code = "payload_removed"
    status_code = 409


def payload_removed_reason() -> str:
    # Not the current RAW_PAYLOAD_RETENTION_DAYS: the setting may have changed since the removal,
    # whose own figure is in its `event.payloads_removed` audit entry.
    return "raw payload removed by the retention policy (RAW_PAYLOAD_RETENTION_DAYS)"


def event_payload_removed_error(event: WebhookEvent) -> PayloadRemoved:
    when = f" on {event.payload_removed_at:%Y-%m-%d}" if event.payload_removed_at else ""
    return PayloadRemoved(f"event {event.pk} cannot be replayed: raw payload removed by the retention policy{when}")


def event_payloads_remove(*, now=None, batch_size: int = BATCH_SIZE, max_batches: int | None = None) -> int:
    """Empty the payloads of finished events received before the retention cut-off; how many.

    Batches of `batch_size` rows, each its own short transaction (row locks held briefly, SKIP LOCKED
    so a row a worker or an operator holds is left for the next run). One audit entry for the run,
    with counts and the cut-off only. Nothing happens while RAW_PAYLOAD_RETENTION_DAYS is 0 (keep forever).
    """
    days = settings.RAW_PAYLOAD_RETENTION_DAYS
    if not days:
        return 0
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    removed = batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            ids = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(received_at__lt=cutoff, status__in=FINISHED, payload_removed_at__isnull=True)
                .order_by("received_at")
                .values_list("id", flat=True)[:batch_size]
            )
            if ids:
                # The status again: a row reprocessed since the SELECT is no longer finished.
                removed += WebhookEvent.objects.filter(id__in=ids, status__in=FINISHED).update(
                    body_encrypted=b"", headers_encrypted=b"", payload_removed_at=now
                )
        batches += 1
        if len(ids) < batch_size:
            break
    if removed:
        audit_entry_append(
            action="event.payloads_removed",
            data={"removed": removed, "cutoff": cutoff.isoformat(), "retention_days": days},
        )
    return removed
