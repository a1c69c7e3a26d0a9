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

    The log is several independent chains (shards, one `AuditChainHead` each), so that concurrent
    transactions append without waiting on each other. `chain_shard` and `chain_seq` are the entry's
    position: `chain_seq` is gapless within its shard (assigned under that shard's head lock), and
    `prev_hash` is the hash of the entry before it IN THE SAME SHARD. `id` is global and unique but
    comes from a sequence (migration 0006), so it may have gaps (rolled-back appends) and is only
    roughly in commit order; a missing entry is a missing `chain_seq`, not a missing `id`. The hash
    covers `id`, so ids cannot be renumbered either. A log written before migration 0006 is shard 1's
    history (chain_seq = id).
    `event_id` deliberately has no foreign key: an audit row must never block, or be cascaded by,
    changes to events. Rows are never updated or deleted; database triggers reject both (migration 0002).
    """

    id = models.BigIntegerField(primary_key=True)
    chain_shard = models.PositiveSmallIntegerField()
    chain_seq = models.BigIntegerField()
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
            models.UniqueConstraint(fields=["chain_shard", "chain_seq"], name="auditentry_unique_chain_position"),
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
    """The head of one chain shard: its last entry's position and hash. `id` is the shard number (1…N).

    An append locks one free head (SELECT … FOR UPDATE SKIP LOCKED), so concurrent transactions
    extend different shards and never fork one; the head also lets verification notice entries
    removed from a shard's end. Heads are created by `migrate` (AUDIT_CHAIN_SHARDS of them) and must
    always exist: a missing head is a broken chain, never a fresh one. The rows are also the record
    of how many shards the log has: a changed setting only ever adds heads.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64)

    def __str__(self):
        return f"audit chain shard {self.id} at #{self.last_seq}"


class AuditChainAnchor(models.Model):
    """Every shard head at one moment, keyed and chained: the shards' tails, anchored together.

    Written by the head publisher (beat) and by every successful `verify_audit_chain`. Verification
    checks that the anchors form an unbroken keyed chain, that no shard ever moves backwards from one
    anchor to the next, and that every shard still holds the position and hash the newest anchor
    names: truncating one shard's tail, which its own head could be rewound to hide, is caught.
    Not an AuditEntry, so entry counts and the audit API do not change. Append-only (migration 0006).
    """

    id = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    heads = models.JSONField()  # {"<shard>": [last_seq, last_hash], …}
    prev_hash = models.CharField(max_length=64)
    anchor_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"audit chain anchor #{self.id}"
