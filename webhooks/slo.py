"""The "paid but not provisioned" SLO: payments whose buyer has waited longer than
`PROVISIONING_SLO_SECONDS` without the entitlement they paid for.

Interface only for now (issue 12): `unprovisioned_payments()` is what the periodic check, the
`payhook_unprovisioned_payments` gauge and the admin index read.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings


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


def unprovisioned_payments(*, now: datetime | None = None, limit: int = 50) -> SloReport:
    """Stored payment events older than the SLO whose entitlement has not been granted (newest-first
    `payments`, at most `limit`; `count` counts them all). No personal data: ids, types and times."""
    return SloReport(slo_seconds=settings.PROVISIONING_SLO_SECONDS, count=0, oldest_age_seconds=None, payments=[])
