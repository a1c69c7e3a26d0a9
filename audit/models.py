from django.db import models
from django.utils import timezone


class AuditAction(models.TextChoices):
    """The contract's audit actions. New ones may be added; these names never change."""

    WEBHOOK_RECEIVED = "webhook.received"
    EVENT_IGNORED = "event.ignored"
    ENTITLEMENT_GRANTED = "entitlement.granted"
    ENTITLEMENT_REVOKED = "entitlement.revoked"
    NOTIFICATION_SENT = "notification.sent"
    NOTIFICATION_SUPPRESSED = "notification.suppressed"
    NOTIFICATION_FAILED = "notification.failed"
    TASK_DEAD_LETTERED = "task.dead_lettered"
    DLQ_REPLAYED = "dlq.replayed"
    DLQ_RESOLVED = "dlq.resolved"
    DLQ_DISCARDED = "dlq.discarded"
    EVENT_REPROCESSED = "event.reprocessed"
    ENDPOINT_SECRET_ADDED = "endpoint.secret_added"
    ENDPOINT_SECRET_REMOVED = "endpoint.secret_removed"
    PREFERENCES_CHANGED = "preferences.changed"
    # Added: operator and import changes of money-bearing state (docs/audit.md).
    CUSTOMER_LINKED = "customer.linked"
    PRODUCT_CREATED = "product.created"
    PRODUCT_CHANGED = "product.changed"
    PRODUCT_DELETED = "product.deleted"
    ENDPOINT_CHANGED = "endpoint.changed"
    # A grant that an earlier refund, dispute or subscription end had already revoked (issue 12).
    ENTITLEMENT_BLOCKED = "entitlement.blocked"
    # Support read a customer's story (support/, issue 12): who looked up whom, never the term in clear.
    CUSTOMER_LOOKED_UP = "customer.looked_up"
    # Retention emptied the raw bodies of finished events older than RAW_PAYLOAD_RETENTION_DAYS (issue 13).
    EVENT_PAYLOADS_REMOVED = "event.payloads_removed"


class AuditEntry(models.Model):
    """One link of the append-only, hash-chained audit log.

    `id` is the position in the chain, assigned gaplessly under the chain lock (not by a sequence,
    which leaves gaps on rollback), so a missing id is a removed entry. `event_id` deliberately has
    no foreign key: an audit row must never block, or be cascaded by, changes to events.
    Rows are never updated or deleted; database triggers reject both (migration 0002).
    """

    id = models.BigIntegerField(primary_key=True)
    action = models.CharField(max_length=64)
    occurred_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=64, default="system")
    event_id = models.UUIDField(null=True, blank=True)
    data = models.JSONField(default=dict)
    dedup_key = models.CharField(max_length=255, null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        constraints = [
            models.UniqueConstraint(fields=["dedup_key"], name="auditentry_unique_dedup_key"),
        ]
        indexes = [
            models.Index(fields=["event_id", "id"], name="auditentry_event"),
            models.Index(fields=["action", "id"], name="auditentry_action"),
            models.Index(fields=["occurred_at"], name="auditentry_occurred_at"),
        ]

    def __str__(self):
        return f"#{self.id} {self.action}"


class AuditSubject(models.Model):
    """A keyed hash (blind index) of an identifier support staff search by; never the value itself."""

    entry = models.ForeignKey(AuditEntry, on_delete=models.PROTECT, related_name="subjects")
    kind = models.CharField(max_length=32)
    value_hash = models.CharField(max_length=64)

    class Meta:
        # Covering: a search reads the matching entry ids from the index alone (migration 0005).
        indexes = [models.Index(fields=["value_hash", "entry"], name="auditsubject_hash_entry")]

    def __str__(self):
        return f"{self.kind}:{self.value_hash[:12]}…"


class AuditChainHead(models.Model):
    """The single row that names the chain's last entry.

    Appends lock it (SELECT … FOR UPDATE), so concurrent workers extend the chain one at a time and
    never fork it; it also lets verification notice entries removed from the end. It is created by
    `migrate` and must always exist: a missing head is a broken chain, never a fresh one.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64)

    def __str__(self):
        return f"audit chain head at #{self.last_id}"
