from django.conf import settings
from django.db import models
from django.utils import timezone

from config.ids import uuid7


class Channel(models.TextChoices):
    EMAIL = "email"
    IN_APP = "in_app"


class Category(models.TextChoices):
    BILLING = "billing"
    ACCESS = "access"
    PRODUCT_UPDATES = "product_updates"


# What a user gets when they never chose. Billing and access messages concern money and what the
# user paid for, so both channels are on; product updates are marketing-like, so they never reach
# an inbox without an opt-in, but stay visible in-app. A category added later must be added here
# too (a test checks every Category × Channel has a default).
PREFERENCE_DEFAULTS: dict[tuple[str, str], bool] = {
    (Category.BILLING, Channel.EMAIL): True,
    (Category.BILLING, Channel.IN_APP): True,
    (Category.ACCESS, Channel.EMAIL): True,
    (Category.ACCESS, Channel.IN_APP): True,
    (Category.PRODUCT_UPDATES, Channel.EMAIL): False,
    (Category.PRODUCT_UPDATES, Channel.IN_APP): True,
}


class Notification(models.Model):
    """One message for one (event, user, channel, template), written before anything is sent.

    The unique constraint is the idempotency: a redelivered or replayed event finds this row and
    sends nothing. The row never holds the recipient's address (read from the user at send time)
    nor the email body (it carries the unsubscribe token); `context` holds only the allowlisted,
    non-personal values the templates use.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"  # email committed, not yet handed to the backend: safe to send later
        SENDING = "sending"  # email handed to the send step; stays here if the worker died mid-send
        SENT = "sent"
        SUPPRESSED = "suppressed"
        FAILED = "failed"

    class Reason(models.TextChoices):
        PREFERENCE_OFF = "preference_off"
        NO_EMAIL_ADDRESS = "no_email_address"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Our WebhookEvent id, deliberately without a foreign key: notifications outlive event pruning
    # and are written inside the event's own processing transaction.
    event_id = models.UUIDField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    template = models.CharField(max_length=64)
    category = models.CharField(max_length=32, choices=Category.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    reason = models.CharField(max_length=32, choices=Reason.choices, blank=True)
    error_type = models.CharField(max_length=100, blank=True, help_text="Exception class of a failed send; never its message.")
    message_id = models.CharField(
        max_length=255, blank=True, db_index=True,
        help_text="The e-mail's Message-ID header, set when it is claimed for sending: find it in the mail provider's logs.",
    )
    subject = models.CharField(max_length=200)
    body = models.TextField(blank=True, help_text="In-app text; empty for email.")
    context = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "user", "channel", "template"], name="notification_unique_per_event_user_channel_template"
            ),
        ]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="notification_user_created"),
            models.Index(fields=["status", "created_at"], name="notification_status_created"),
        ]

    def __str__(self):
        return f"{self.template}/{self.channel} ({self.status})"


class NotificationPreference(models.Model):
    """An explicit choice for one (user, category, channel); without a row PREFERENCE_DEFAULTS applies."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences")
    category = models.CharField(max_length=32, choices=Category.choices)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    enabled = models.BooleanField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["user_id", "category", "channel"]
        constraints = [
            models.UniqueConstraint(fields=["user", "category", "channel"], name="notificationpreference_unique_per_user_category_channel"),
        ]

    def __str__(self):
        return f"{self.category}/{self.channel}: {'on' if self.enabled else 'off'}"
