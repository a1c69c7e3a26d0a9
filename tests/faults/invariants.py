"""What must hold after any fault: nothing lost, each effect once, the audit chain intact, and every
e-mail that left the building accounted for by exactly one `sent` row."""

import re
from collections import Counter
from pathlib import Path

from django.conf import settings
from django.core.management import call_command

from audit.models import AuditEntry
from fulfillment.models import Entitlement
from notifications.models import Notification
from webhooks.models import WebhookEvent

FINAL = {"processed", "ignored", "dead"}
_NOTIFICATION_HEADER = re.compile(rb"^X-Payhook-Notification-Id: ([0-9a-f-]{36})\r?$", re.MULTILINE)


def mailed_notification_ids(mail_dir: Path) -> Counter:
    """How many times each notification id left through the file backend (one file per connection,
    a message per e-mail, each carrying its notification id in a header)."""
    mailed = Counter()
    for path in Path(mail_dir).glob("*"):
        mailed.update(match.decode() for match in _NOTIFICATION_HEADER.findall(path.read_bytes()))
    return mailed


def invariants_check(*, expected_events: int, mail_dir: Path | None = None, sending_windows: int = 0) -> dict[str, int]:
    """Assert the invariants; return the counts for the report.

    `sending_windows`: how many e-mail windows may be left `sending` (their process died, or lost the
    database, between a window's claim and its record, so whether they left is unknown): at most
    NOTIFICATION_EMAIL_SEND_WINDOW rows per process killed (notifications/services.py).
    """
    events = dict(WebhookEvent.objects.values_list("id", "status"))
    statuses = Counter(events.values())
    assert len(events) == expected_events, statuses
    assert set(statuses) <= FINAL, f"events left unfinished: {statuses}"

    # Exactly one `webhook.received` per fulfilled event (its processing committed once), none for dead ones.
    received = Counter(AuditEntry.objects.filter(action="webhook.received").values_list("event_id", flat=True))
    fulfilled = {event_id for event_id, status in events.items() if status in ("processed", "ignored")}
    assert received == Counter(fulfilled), "webhook.received entries per event differ from one"

    # Exactly one `entitlement.granted` per granted row: (event, entitlement) of the entries against
    # (event that set the row, key) of the rows. (Dedup keys cannot be parsed: long ones are hashed.)
    granted = Counter(
        (event_id, data.get("entitlement"))
        for event_id, data in AuditEntry.objects.filter(action="entitlement.granted").values_list("event_id", "data")
    )
    rows = Counter(Entitlement.objects.values_list("last_event_id", "key"))
    assert granted == rows, "entitlement.granted entries per row differ from one"

    emails = Notification.objects.filter(channel="email")
    sent = set(map(str, emails.filter(status="sent").values_list("id", flat=True)))
    sending = set(map(str, emails.filter(status="sending").values_list("id", flat=True)))
    queued = emails.filter(status="queued").count()
    max_sending = sending_windows * settings.NOTIFICATION_EMAIL_SEND_WINDOW
    assert len(sending) <= max_sending, f"{len(sending)} e-mails stuck `sending` (allowed {max_sending})"
    counts = {}
    if mail_dir is not None:
        mailed = mailed_notification_ids(mail_dir)
        assert [n for n in mailed.values() if n > 1] == [], "an e-mail left twice"
        assert sent <= set(mailed), "a `sent` e-mail never left"
        assert set(mailed) - sent <= sending, "an e-mail left that is not recorded sent (nor ambiguous)"
        counts["mail_messages"] = sum(mailed.values())
        counts["ambiguous_that_left"] = len(set(mailed) & sending)

    call_command("verify_audit_chain", stdout=open("/dev/null", "w"))
    counts = {
        "events": len(events),
        **{f"status_{name}": n for name, n in statuses.items()},
        "entitlements": sum(rows.values()),
        "notifications": Notification.objects.count(),
        "emails_sent": len(sent),
        "emails_queued": queued,
        "emails_stuck_sending": len(sending),
        **counts,
        "audit_entries": AuditEntry.objects.count(),
        "audit_chain": "verified",
    }
    print(f"invariants: {counts}")  # shown with -s; the figures go into the issue notes
    return counts
