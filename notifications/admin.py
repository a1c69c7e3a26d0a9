from django.contrib import admin

from config.admin import ReadOnlyAdminMixin
from notifications.models import Notification, NotificationPreference
from notifications.selectors import STALE_SENDING_AFTER, notification_stale_sending_list


class DeliveryFilter(admin.SimpleListFilter):
    """Surfaces emails orphaned mid-send: at-most-once delivery leaves them for a person to judge."""

    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request, model_admin):
        minutes = int(STALE_SENDING_AFTER.total_seconds() // 60)
        return [("stale_sending", f"stale sending (over {minutes} min)")]

    def queryset(self, request, queryset):
        if self.value() == "stale_sending":
            return queryset.filter(pk__in=notification_stale_sending_list().values("pk"))
        return queryset


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Never the address (not stored) nor the body; `user_id` rather than the user, whose string
    # form is the username and may be an email address.
    list_display = ["id", "event_id", "user_id", "channel", "template", "status", "reason", "created_at"]
    list_filter = ["status", "channel", "template", "category", DeliveryFilter]
    search_fields = ["=event_id", "=message_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = [
        "id", "event_id", "user_id", "channel", "category", "template", "status", "reason", "error_type", "message_id",
        "subject", "context", "created_at", "sent_at",
    ]
    readonly_fields = fields


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: preferences change through the API or an unsubscribe link, which audit them."""

    list_display = ["user_id", "category", "channel", "enabled", "updated_at"]
    list_filter = ["category", "channel", "enabled"]
    search_fields = ["=user__id"]
    fields = ["user_id", "category", "channel", "enabled", "updated_at"]
    readonly_fields = fields
