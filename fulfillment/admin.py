from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction

from config.admin import ReadOnlyAdminMixin, admin_action_with_note, note_field
from config.display import id_display, source_display
from fulfillment.exceptions import FulfillmentError
from fulfillment.models import Customer, Entitlement, Product, Subscription
from fulfillment.services import (
    customer_user_link,
    entitlement_restore,
    entitlement_revoke,
    product_create,
    product_delete,
    product_update,
)

# Catalog, customers' users and entitlements are money-bearing: every change here goes through a
# service that appends the audit entry, with the admin user as actor. The admin never saves these
# rows itself.


def _actor(request) -> str:
    return str(request.user.pk)


class ProductForm(forms.ModelForm):
    note = note_field(required=False, help_text="Why (kept in the audit log, scrubbed); do not paste customer data.")

    class Meta:
        model = Product
        fields = ["provider", "price_id", "name", "entitlements"]

    def clean_entitlements(self):
        keys = self.cleaned_data.get("entitlements")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ValidationError('a non-empty list of entitlement keys, e.g. ["pro", "reports"]')
        return sorted({key.strip() for key in keys})


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductForm
    list_display = ["price_id", "provider", "name", "entitlements", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["=price_id", "name"]

    def get_readonly_fields(self, request, obj=None):
        # A price id names the provider's price: an edit would silently re-point the catalog entry.
        return ["provider", "price_id", "updated_at"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if change:
                product_update(
                    product=obj, entitlements=data["entitlements"], name=data.get("name") or "",
                    actor=_actor(request), source="admin", note=data.get("note", ""),
                )
            else:
                created = product_create(
                    provider=data["provider"], price_id=data["price_id"], entitlements=data["entitlements"],
                    name=data.get("name") or "", actor=_actor(request), source="admin", note=data.get("note", ""),
                )
                obj.pk = created.pk
                obj.refresh_from_db()
        except FulfillmentError as exc:
            # The form validated uniqueness already; this is a concurrent add of the same price.
            raise ValidationError(exc.message) from None

    def delete_model(self, request, obj):
        product_delete(product=obj, actor=_actor(request), source="admin")

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for product in queryset.order_by("pk"):
                product_delete(product=product, actor=_actor(request), source="admin")


class CustomerForm(forms.ModelForm):
    note = note_field(required=False, help_text="Required when the user changes: why the customer (and its entitlements) moves.")

    class Meta:
        model = Customer
        fields = ["user"]

    def clean(self):
        cleaned = super().clean()
        if "user" in self.changed_data and not (cleaned.get("note") or "").strip():
            raise ValidationError({"note": "say why the customer moves to another user"})
        return cleaned


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    form = CustomerForm
    # Never the email: only ids and whether a user is linked. `user_id`, not the user, whose string
    # form is the username and may be an email address.
    # A provider customer id that is an email (Adyen's shopperReference often is) shows masked
    # (config.display.id_display); searching by the id itself still finds the row.
    list_display = ["id", "provider", "customer_id_shown", "user_id", "created_at"]
    list_filter = ["provider"]
    search_fields = ["=provider_customer_id", "=user__id"]
    fields = ["provider", "key_shown", "customer_id_shown", "user", "note", "created_at"]
    readonly_fields = ["provider", "key_shown", "customer_id_shown", "created_at"]
    raw_id_fields = ["user"]

    @admin.display(description="provider customer id", ordering="provider_customer_id")
    def customer_id_shown(self, obj):
        return id_display(obj.provider_customer_id) if obj.provider_customer_id else None

    @admin.display(description="key")
    def key_shown(self, obj):
        return obj.key if obj.key.startswith("email:") else id_display(obj.key)  # `email:<hash>`: a hash already

    def get_fields(self, request, obj=None):
        if self.has_change_permission(request, obj):
            return self.fields
        # View only (support): the linked user as its id, never its username; no note to write.
        return ["provider", "key_shown", "customer_id_shown", "user_id", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        if self.has_change_permission(request, obj):
            return self.readonly_fields
        return self.get_fields(request, obj)

    def has_add_permission(self, request):
        return False  # customers come from provider events

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # The only editable field is the user link, and it moves through the audited service.
        if "user" in form.changed_data:
            customer_user_link(
                customer=Customer.objects.get(pk=obj.pk), user=form.cleaned_data["user"], actor=_actor(request),
                note=form.cleaned_data.get("note", ""), source="admin",
            )


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):
    # The source and payment id as shown by config.display (masked when the sender made them an
    # email); the search still matches the real values.
    list_display = ["key", "status", "customer", "source_shown", "expires_at", "state_at"]
    list_filter = ["status", "key"]
    search_fields = ["=customer__provider_customer_id", "=source", "=payment_intent"]
    list_select_related = ["customer"]
    fields = [
        {"source": "source_shown", "payment_intent": "payment_shown"}.get(f.name, f.name) for f in Entitlement._meta.fields
    ]
    readonly_fields = fields

    @admin.display(description="source", ordering="source")
    def source_shown(self, obj):
        return source_display(obj.source)

    @admin.display(description="payment intent")
    def payment_shown(self, obj):
        return id_display(obj.payment_intent) if obj.payment_intent else ""
    actions = ["revoke", "restore"]

    # Read-only for everyone, superusers included: entitlements change through the actions below
    # (audited services) or through provider events, never by editing or deleting rows.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        return request.user.is_active and request.user.has_perm("fulfillment.change_entitlement")

    @admin.action(description="Revoke selected entitlements (with a note)", permissions=["operate"])
    def revoke(self, request, queryset):
        return self._act_with_note(request, queryset, action="revoke", verb="Revoke", done="Revoked",
                                   service=entitlement_revoke, skipped_as="already revoked")

    @admin.action(description="Restore selected entitlements (with a note)", permissions=["operate"])
    def restore(self, request, queryset):
        return self._act_with_note(request, queryset, action="restore", verb="Restore", done="Restored",
                                   service=entitlement_restore, skipped_as="already active")

    def _act_with_note(self, request, queryset, *, action, verb, done, service, skipped_as):
        def apply(note):
            with transaction.atomic():
                acted = [service(entitlement=row, actor=_actor(request), note=note, source="admin") for row in queryset.order_by("pk")]
            skipped = f"; skipped {acted.count(False)} {skipped_as}" if False in acted else ""
            self.message_user(request, f"{done} {acted.count(True)} entitlement(s){skipped}.",
                              messages.SUCCESS if True in acted else messages.WARNING)

        return admin_action_with_note(
            self, request, queryset, action=action, verb=verb, noun="entitlement(s)",
            explanation="Each change is audited with you as the actor and this note. A newer provider event still wins.",
            preview_headers=["id", "key", "status", "customer", "source"],
            preview_rows=lambda qs: list(qs.values_list("id", "key", "status", "customer_id", "source")[:20]),
            apply=apply, form_id="entitlement-note-form",
        )


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Provider state, written only by event processing (it decides whether a late grant stays revoked).
    list_display = ["subscription_id", "status", "customer", "current_period_end", "state_at"]
    list_filter = ["status"]
    search_fields = ["=subscription_id"]
    readonly_fields = [f.name for f in Subscription._meta.fields]
