from celery import shared_task

from notifications import services


@shared_task(name="notifications.tasks.notification_emails_queued_deliver")
def notification_emails_queued_deliver() -> int:
    """Periodic (beat): send emails whose worker died after the commit but before sending them."""
    return services.notification_emails_queued_deliver()
