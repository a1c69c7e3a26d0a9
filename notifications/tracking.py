"""The mail provider's delivery events, as django-anymail delivers them (anymail.signals.tracking).

Anymail receives each provider's tracking webhook (mounted under /notifications/anymail/ when
ANYMAIL["WEBHOOK_SECRET"] is set, see notifications/public_urls.py), verifies it and normalises it
into an AnymailTrackingEvent. This receiver only passes the event's type and the ids that name our
row to the service; the signal is anymail's interface, not a seam of ours.
"""

from notifications.services import notification_email_provider_event


def anymail_tracking_received(sender, event, esp_name, **kwargs) -> None:
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    notification_email_provider_event(
        event_type=event.event_type or "",
        notification_id=str(metadata.get("notification_id") or ""),
        message_id=str(event.message_id or ""),
    )
