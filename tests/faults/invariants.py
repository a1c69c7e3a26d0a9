"""What must hold after any fault: nothing lost, each effect once, the audit chain intact."""

from collections import Counter

from django.core.management import call_command
from django.db.models import Count

from audit.models import AuditEntry
from fulfillment.models import Entitlement
from notifications.models import Notification
from webhooks.models import WebhookEvent

FINAL = {"processed", "ignored", "dead"}


def invariants_check(*, expected_events: int) -> dict[str, int]:
    """Assert the invariants; return the counts for the report."""
    statuses = Counter(WebhookEvent.objects.values_list("status", flat=True))
    assert sum(statuses.values()) == expected_events, statuses
    assert set(statuses) <= FINAL, f"events left unfinished: {statuses}"
    duplicate_grants = (
        Entitlement.objects.values("customer", "key", "source").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    assert duplicate_grants == 0
    duplicate_notifications = (
        Notification.objects.values("event_id", "user_id", "channel", "template").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    assert duplicate_notifications == 0
    audit_dupes = [key for key, n in Counter(AuditEntry.objects.exclude(dedup_key=None).values_list("dedup_key", flat=True)).items() if n > 1]
    assert audit_dupes == []
    received = Counter(AuditEntry.objects.filter(action="webhook.received").values_list("event_id", flat=True))
    assert set(received.values()) <= {1}
    call_command("verify_audit_chain", stdout=open("/dev/null", "w"))
    counts = {
        "events": sum(statuses.values()),
        **{f"status_{name}": n for name, n in statuses.items()},
        "entitlements": Entitlement.objects.count(),
        "notifications": Notification.objects.count(),
        "emails_sent": Notification.objects.filter(channel="email", status="sent").count(),
        "emails_queued": Notification.objects.filter(channel="email", status="queued").count(),
        "emails_stuck_sending": Notification.objects.filter(channel="email", status="sending").count(),
        "audit_entries": AuditEntry.objects.count(),
        "audit_chain": "verified",
    }
    print(f"invariants: {counts}")  # shown with -s; the figures go into the issue notes
    return counts
