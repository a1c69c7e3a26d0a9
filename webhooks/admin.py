from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from webhooks.exceptions import WebhookError
from webhooks.models import EndpointSecret, WebhookEndpoint, WebhookEvent
from webhooks.schemes import scheme_choices, scheme_get
from webhooks.services import endpoint_secret_add


class EndpointSecretInline(admin.TabularInline):
    model = EndpointSecret
    extra = 0
    fields = ["kind", "hint", "fingerprint", "created_at"]
    readonly_fields = fields
    can_delete = True

    def has_add_permission(self, request, obj=None):
        return False  # secrets are added through the write-only field on the endpoint form


class WebhookEndpointForm(forms.ModelForm):
    scheme = forms.ChoiceField(choices=scheme_choices)
    new_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Adds a signing secret (or whpk_ public key). Existing secrets keep verifying until removed.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["slug", "scheme", "description", "is_active"]

    def clean(self):
        cleaned = super().clean()
        secret = cleaned.get("new_secret")
        if secret and cleaned.get("scheme"):
            try:
                scheme_get(cleaned["scheme"]).secret_parse(secret)
            except WebhookError as exc:
                raise ValidationError({"new_secret": exc.message}) from None
        elif not secret and not self.instance.pk:
            raise ValidationError({"new_secret": "a new endpoint needs a signing secret"})
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["slug", "scheme", "is_active", "secret_count", "created_at"]
    inlines = [EndpointSecretInline]

    @admin.display(description="active secrets")
    def secret_count(self, obj):
        return obj.secrets.count()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("new_secret"):
            endpoint_secret_add(endpoint=obj, secret=form.cleaned_data["new_secret"])


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "event_type", "status", "endpoint", "received_at", "attempts"]
    list_filter = ["endpoint", "event_type", "status", "received_at"]
    search_fields = ["=provider_event_id", "=idempotency_key"]
    date_hierarchy = "received_at"
    list_select_related = ["endpoint"]
    show_full_result_count = False
    exclude = ["body_encrypted", "headers_encrypted"]
    readonly_fields = [
        "id", "endpoint", "idempotency_key", "provider_event_id", "event_type", "status", "content_hash",
        "received_at", "provider_created_at", "dispatched_at", "processed_at", "attempts", "last_error",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("body_encrypted", "headers_encrypted")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
