from config.exceptions import ApplicationError


class NotificationError(ApplicationError):
    """A notification request payhook refuses; `code` reaches API clients as `error`."""


class UnknownNotificationTemplate(NotificationError):
    code = "unknown_notification_template"


class UnknownCategory(NotificationError):
    code = "unknown_category"


class CategoryMismatch(NotificationError):
    """The caller's category is not the one the template is registered under: preferences would be
    checked against the wrong switch, so this is a programming error, never retried."""

    code = "category_mismatch"


class UnknownChannel(NotificationError):
    code = "unknown_channel"


class InvalidUnsubscribeToken(NotificationError):
    code = "invalid_unsubscribe_token"


class UserNotFound(NotificationError):
    code = "user_not_found"
    status_code = 404
