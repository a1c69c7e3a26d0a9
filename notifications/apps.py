from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self):
        from anymail.signals import tracking

        from notifications.tracking import anymail_tracking_received

        tracking.connect(anymail_tracking_received, dispatch_uid="notifications.anymail_tracking_received")
