from django.contrib import admin

from fulfillment.models import Customer, Entitlement, Product, Subscription


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["price_id", "provider", "name", "entitlements", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["=price_id", "name"]


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    # Never the email: only ids and whether a user is linked.
    list_display = ["id", "provider", "provider_customer_id", "user", "created_at"]
    list_filter = ["provider"]
    search_fields = ["=provider_customer_id", "=user__id"]
    fields = ["provider", "key", "provider_customer_id", "user", "created_at"]
    readonly_fields = ["provider", "key", "provider_customer_id", "created_at"]
    raw_id_fields = ["user"]


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):
    list_display = ["key", "status", "customer", "source", "expires_at", "state_at"]
    list_filter = ["status", "key"]
    search_fields = ["=customer__provider_customer_id", "=source", "=payment_intent"]
    list_select_related = ["customer"]
    readonly_fields = [f.name for f in Entitlement._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["subscription_id", "status", "customer", "current_period_end", "state_at"]
    list_filter = ["status"]
    search_fields = ["=subscription_id"]
    readonly_fields = [f.name for f in Subscription._meta.fields]
