from django.contrib import admin

from accounts.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens by prefix, owner and expiry; the key itself is not stored. Staff revoke a token by
    deleting it or shorten it by its expiry; new keys come from `manage.py drf_create_token`, the
    one place a key is shown."""

    list_display = ["prefix", "user", "created_at", "expires_at", "last_used_at"]
    list_filter = ["expires_at"]
    search_fields = ["prefix", "user__username"]
    fields = ["prefix", "user", "created_at", "expires_at", "last_used_at"]
    readonly_fields = ["prefix", "user", "created_at", "last_used_at"]
    ordering = ["-created_at"]

    def has_add_permission(self, request):
        return False
