from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone

from notifications.exceptions import UserNotFound
from notifications.models import PREFERENCE_DEFAULTS, Category, Channel, Notification, NotificationPreference

# An email row still `sending` after this long was almost certainly orphaned by a worker that died
# between handing the message to the backend and recording the outcome (sends take seconds).
STALE_SENDING_AFTER = timedelta(minutes=15)


def notification_list(*, user_id: int | None = None) -> QuerySet[Notification]:
    notifications = Notification.objects.all()
    if user_id is not None:
        notifications = notifications.filter(user_id=user_id)
    return notifications


def notification_stale_sending_list(*, older_than: timedelta = STALE_SENDING_AFTER) -> QuerySet[Notification]:
    """Emails whose outcome is unknown: maybe delivered, maybe not. Never resent automatically;
    an operator decides (see notification_send)."""
    return Notification.objects.filter(
        status=Notification.Status.SENDING, created_at__lt=timezone.now() - older_than
    ).order_by("created_at")


def notification_preferences_effective(*, user_id: int) -> dict[str, dict[str, bool]]:
    """The full category × channel matrix for a user: explicit choices over PREFERENCE_DEFAULTS."""
    matrix = {category: {channel: PREFERENCE_DEFAULTS[(category, channel)] for channel in Channel.values} for category in Category.values}
    for category, channel, enabled in NotificationPreference.objects.filter(user_id=user_id).values_list(
        "category", "channel", "enabled"
    ):
        if category in matrix and channel in matrix[category]:
            matrix[category][channel] = enabled
    return matrix


def notification_user_get(*, user_id: int):
    try:
        return get_user_model().objects.get(pk=user_id)
    except get_user_model().DoesNotExist:
        raise UserNotFound("no such user") from None
