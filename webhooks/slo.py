"""The "paid but not provisioned" SLO: payments whose buyer has waited longer than
`PROVISIONING_SLO_SECONDS` without the entitlement they paid for.

`unprovisioned_payments()` is what the periodic check (webhooks/monitoring.py), the
`payhook_unprovisioned_payments` gauge (computed at scrape) and the admin index read.

A payment is a stored event whose canonical events include a grant (`payhook.payment.succeeded.v1`,
`payhook.subscription.activated.v1`), received more than the SLO ago and not finished (`received`,
`processing`, `failed` or `dead`). Canonical events are rebuilt from the stored bytes, so only the
oldest `SLO_SCAN_LIMIT` unfinished events past the SLO are looked at: a cheap indexed query
(status, received_at) when all is well, a bounded amount of decryption when it is not.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from providers import scheme_get
from webhooks.models import WebhookEvent
from webhooks.processing import webhook_event_canonical_events
from webhooks.receiving import webhook_event_body

GRANT_TYPES = frozenset({"payhook.payment.succeeded.v1", "payhook.subscription.activated.v1"})
# Not finished: a worker has it or will, it failed and waits for a retry, or it is dead.
WAITING_FOR_GRANT = (
    WebhookEvent.Status.RECEIVED,
    WebhookEvent.Status.PROCESSING,
    WebhookEvent.Status.FAILED,
    WebhookEvent.Status.DEAD,
)
# Events past the SLO whose canonical events one check builds (oldest first); past this many the
# count is a lower bound, which is already a page for the on-call.
SLO_SCAN_LIMIT = 300


@dataclass(frozen=True)
class UnprovisionedPayment:
    event_id: str
    endpoint: str
    event_type: str
    status: str
    received_at: datetime
    paid_at: datetime | None
    age_seconds: float


@dataclass(frozen=True)
class SloReport:
    slo_seconds: int
    count: int
    oldest_age_seconds: float | None
    payments: list[UnprovisionedPayment] = field(default_factory=list)


def _grant_time(event: WebhookEvent) -> tuple[bool, datetime | None]:
    """(is a payment/subscription grant, its provider time). An event whose facts cannot be built
    counts as a payment only when it is dead: it will not be provisioned without an operator."""
    try:
        payload = json.loads(webhook_event_body(event=event))
        if scheme_get(event.endpoint.scheme).mode_mismatch(payload, mode=event.endpoint.mode):
            return False, None  # stored to be ignored, never fulfilled
        canonical_events = webhook_event_canonical_events(event=event, payload=payload)
    except Exception:  # unreadable, unknown scheme, facts refused: what the event is cannot be told
        return event.status == WebhookEvent.Status.DEAD, None
    grants = [c for c in canonical_events if c["type"] in GRANT_TYPES]
    if not grants:
        return False, None
    return True, parse_datetime(grants[0]["time"])


def unprovisioned_payments(*, now: datetime | None = None, limit: int = 50) -> SloReport:
    """Stored payment events older than the SLO whose entitlement has not been granted (newest-first
    `payments`, at most `limit`; `count` counts them all). No personal data: ids, types and times."""
    now = now or timezone.now()
    slo_seconds = settings.PROVISIONING_SLO_SECONDS
    candidates = (
        WebhookEvent.objects.filter(status__in=WAITING_FOR_GRANT, received_at__lt=now - timedelta(seconds=slo_seconds))
        .select_related("endpoint")
        .defer("headers_encrypted")
        .order_by("received_at")[:SLO_SCAN_LIMIT]
    )
    found = []
    for event in candidates:
        is_payment, paid_at = _grant_time(event)
        if not is_payment:
            continue
        found.append(
            UnprovisionedPayment(
                event_id=str(event.id), endpoint=event.endpoint.slug, event_type=event.event_type, status=event.status,
                received_at=event.received_at, paid_at=paid_at,
                age_seconds=max((now - event.received_at) / timedelta(seconds=1), 0.0),
            )
        )
    return SloReport(
        slo_seconds=slo_seconds,
        count=len(found),
        oldest_age_seconds=found[0].age_seconds if found else None,
        payments=list(reversed(found))[: max(limit, 0)],
    )
