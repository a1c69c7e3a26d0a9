
from django.conf import settings
from django.db import models
from django.utils import timezone

from config.ids import uuid7


class WebhookEndpoint(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    scheme = models.CharField(max_length=32)
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Bumped in the transaction of every secret change. Web processes cache the keys with the version
    # they were loaded at, and store an event only if the version is still current (webhooks/receiving.py).
    secrets_version = models.BigIntegerField(default=0, editable=False)
    # Stripe events whose `livemode` differs from the endpoint's mode are stored and ignored.
    mode = models.CharField(max_length=4, choices=[("live", "live"), ("test", "test")], default="live")
    # Networks (CIDR strings) a delivery may come from; empty: any address (webhooks/throttling.py).
    allowed_sources = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug


class EndpointSecret(models.Model):
    """One active signing secret (or Standard Webhooks public key) of an endpoint.

    The value is encrypted at rest; `fingerprint` is a keyed hash that names the secret in lists and
    the audit log without ever showing it. It is computed once, when the secret is added, and is for
    display only: removal compares the decrypted values, so no key rotation can make it miss.
    A secret with `expires_at` stops verifying at that time (a "roll"), with nobody acting.
    """

    class Kind(models.TextChoices):
        HMAC = "hmac", "HMAC secret"
        ED25519_PUBLIC_KEY = "ed25519", "ed25519 public key"
        WEBHOOK_ID = "webhook_id", "webhook id (PayPal: verified with PayPal's certificate)"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="secrets")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value_encrypted = models.BinaryField()
    fingerprint = models.CharField(max_length=16)
    hint = models.CharField(max_length=16, help_text="The first characters of the secret, to recognise it.")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Stops verifying at this time; empty: never.")

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "fingerprint"], name="endpointsecret_unique_per_endpoint"),
        ]

    def __str__(self):
        return f"{self.hint}… ({self.fingerprint})"


class WebhookEvent(models.Model):
    """A verified delivery, stored byte-exact and encrypted, exactly once per idempotency key.

    The row is also the outbox: the relay (webhooks/relay.py) publishes `received` rows not yet
    dispatched, and the sweep republishes rows that got stuck.
    """

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSING = "processing"
        PROCESSED = "processed"
        IGNORED = "ignored"
        FAILED = "failed"
        DEAD = "dead"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="events")
    idempotency_key = models.CharField(max_length=330)
    provider_event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the payload minus fields a provider changes between deliveries.")
    body_encrypted = models.BinaryField()
    headers_encrypted = models.BinaryField()
    received_at = models.DateTimeField(default=timezone.now)
    provider_created_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    # The lease: which worker process (`host:pid:token`) holds the event and until when. A holder
    # renews it while it works; once it lapses the sweep republishes the event (webhooks/receiving.py).
    lease_holder = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The W3C traceparent of the request that stored the event, so that its processing joins that
    # trace when the relay publishes it later (config/tracing.py); empty while tracing is off. A database
    # default too, so processes of the previous release still insert during a rolling deploy.
    traceparent = models.CharField(max_length=55, blank=True, default="", db_default="")
    # Set when the retention task emptied body and headers (webhooks/retention.py): hash, ids and
    # outcome stay, but the event can no longer be replayed.
    payload_removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        # No unique constraint on idempotency_key: on PostgreSQL the table is partitioned by month of
        # received_at, and a partitioned table's unique indexes must include the partition key. The
        # key's uniqueness across all months lives in EventKey, written in the same statement.
        indexes = [
            models.Index(fields=["status", "received_at"], name="webhookevent_status_received"),
            models.Index(fields=["endpoint", "received_at"], name="webhookevent_endpoint_received"),
            models.Index(fields=["event_type", "received_at"], name="webhookevent_type_received"),
            models.Index(fields=["provider_event_id"], name="webhookevent_provider_id"),
            # The admin's and support's search by key read the events table; the unique index that served
            # them moved to EventKey (partitioning), so a plain one stays here (the same write cost as before).
            models.Index(fields=["idempotency_key"], name="webhookevent_idempotency_key"),
            # The outbox: only rows the relay has still to publish, so its poll stays cheap under a backlog.
            models.Index(
                fields=["received_at"], name="webhookevent_outbox", condition=models.Q(status="received", dispatched_at__isnull=True)
            ),
            # The sweep's look for lapsed leases: only rows a worker holds, a handful at any time.
            models.Index(
                fields=["lease_expires_at"], name="webhookevent_leased", condition=models.Q(lease_expires_at__isnull=False)
            ),
            # Retention: finished rows that still hold a payload; rows leave it once emptied, so each
            # run reads only what it has to empty, however many old rows the table keeps.
            models.Index(
                fields=["received_at"], name="webhookevent_payload_kept",
                condition=models.Q(payload_removed_at__isnull=True, status__in=["processed", "ignored", "dead"]),
            ),
        ]
        permissions = [("view_raw_payload", "Can view decrypted raw payloads")]

    def __str__(self):
        return f"{self.idempotency_key} ({self.status})"


class EventKey(models.Model):
    """The idempotency key of one stored event, unique across every month of the events table.

    Narrow and unpartitioned: receiving inserts it and the event in one statement (config/db.py), and
    answers a redelivery from this row alone (the content hash is here), without touching the events.
    """

    idempotency_key = models.CharField(max_length=330, primary_key=True)
    event_id = models.UUIDField()
    content_hash = models.CharField(max_length=64)
    received_at = models.DateTimeField()

    def __str__(self):
        return self.idempotency_key


class DeadLetter(models.Model):
    """One unit of work that failed for good, kept until an operator replays, resolves or discards it.

    `unit_key` names the unit (e.g. `<task>:<event id>`) and is unique, so a unit that fails again
    after a replay reopens its row instead of adding one. Message and traceback are PII-scrubbed
    before they are stored; `args` hold ids only.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        REPLAYED = "replayed"
        RESOLVED = "resolved"
        DISCARDED = "discarded"

    unit_key = models.CharField(max_length=400)
    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    # No database constraint: on PostgreSQL the events' primary key is (id, received_at) (partitioning),
    # and a foreign key must name a whole unique key. Events are never deleted, so SET_NULL is moot.
    event = models.ForeignKey(
        WebhookEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="dead_letters", db_constraint=False
    )
    error_type = models.CharField(max_length=200)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts over every time this unit was dead-lettered (a reopened row adds to it)."
    )
    occurrences = models.PositiveIntegerField(default=1, help_text="How many times this unit was dead-lettered.")
    first_failed_at = models.DateTimeField(default=timezone.now)
    last_failed_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    acted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acted_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-last_failed_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["unit_key"], name="deadletter_unique_unit_key"),
        ]
        indexes = [
            # The admin and API list by status first, newest failure first, then narrow by task or error.
            models.Index(fields=["status", "last_failed_at"], name="deadletter_status_failed"),
            models.Index(fields=["task_name", "last_failed_at"], name="deadletter_task_failed"),
            models.Index(fields=["error_type", "last_failed_at"], name="deadletter_error_failed"),
            models.Index(fields=["last_failed_at"], name="deadletter_failed"),
            models.Index(fields=["first_failed_at"], name="deadletter_first_failed"),
        ]

    def __str__(self):
        return f"{self.unit_key} ({self.status})"
