from django.conf import settings
from django.db import models
from django.utils import timezone

from config.display import id_display


class Product(models.Model):
    """Catalog: a provider price id and the entitlement keys it grants."""

    provider = models.CharField(max_length=32, default="stripe")
    price_id = models.CharField(max_length=255)
    entitlements = models.JSONField(default=list, help_text='Entitlement keys, e.g. ["pro", "reports"].')
    name = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "price_id"]
        constraints = [models.UniqueConstraint(fields=["provider", "price_id"], name="product_unique_price")]

    def __str__(self):
        return f"{self.provider}:{self.price_id}"


class Customer(models.Model):
    """A buyer as the provider knows them; entitlements hang here and follow the linked user.

    `key` is the provider customer id, or `email:<hash>` for a guest checkout without one. Emails are
    kept only as a keyed hash (to link a user later) and encrypted (to write to a guest).
    """

    provider = models.CharField(max_length=32)
    key = models.CharField(max_length=255)
    provider_customer_id = models.CharField(max_length=255, null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="customers")
    email_hash = models.CharField(max_length=64, blank=True, db_index=True)
    email_encrypted = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "key"], name="customer_unique_key")]
        indexes = [models.Index(fields=["provider_customer_id"], name="customer_provider_id")]

    def __str__(self):
        # The admin's <title>, breadcrumb and every FK column: an id that is an email is masked.
        return f"{self.provider}:{id_display(self.key) if not self.key.startswith('email:') else 'guest'}"


class Entitlement(models.Model):
    """Access to one key through one source (a subscription or a one-off payment).

    Unique per (customer, key, source): redelivery and replay find the row instead of adding one.
    `state_at` is the provider time of the fact that set `status`; an older fact never overrides a
    newer one, so out-of-order deliveries converge. A revocation that arrives first leaves a revoked
    row behind that a late grant cannot reactivate.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        REVOKED = "revoked"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="entitlements")
    key = models.CharField(max_length=100)
    source = models.CharField(max_length=300, help_text="subscription:<id> or payment:<id>")
    payment_intent = models.CharField(max_length=255, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    state_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    granted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.CharField(max_length=64, blank=True)
    last_event_id = models.UUIDField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer_id", "key"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "key", "source"], name="entitlement_unique_per_source"),
        ]
        indexes = [models.Index(fields=["customer", "status"], name="entitlement_customer_status")]

    def __str__(self):
        return f"{self.key} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE and (self.expires_at is None or self.expires_at > timezone.now())


class Subscription(models.Model):
    """The latest known state of a provider subscription, ordered by provider event time."""

    provider = models.CharField(max_length=32)
    subscription_id = models.CharField(max_length=255)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=32)
    price_ids = models.JSONField(default=list)
    current_period_end = models.DateTimeField(null=True, blank=True)
    state_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "subscription_id"], name="subscription_unique_id"),
        ]


class PaymentRevocation(models.Model):
    """A refund or dispute against a payment; kept so a grant that arrives later stays revoked.

    `event_id` is the stored event that recorded it (no foreign key: fulfilment never imports
    ingestion), named by the `entitlement.blocked` entry of a grant it blocks.
    """

    provider = models.CharField(max_length=32)
    payment_intent = models.CharField(max_length=255)
    reason = models.CharField(max_length=32)
    occurred_at = models.DateTimeField()
    event_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "payment_intent"], name="paymentrevocation_unique"),
        ]
