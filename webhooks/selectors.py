from django.db.models import QuerySet

from webhooks.models import WebhookEvent


def webhook_event_list() -> QuerySet[WebhookEvent]:
    return WebhookEvent.objects.select_related("endpoint").defer("body_encrypted", "headers_encrypted")
