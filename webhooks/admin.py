import json
import logging
import uuid
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from config.admin import admin_action_with_note
from config.permissions import OPERATORS
from providers import scheme_choices, scheme_get
from webhooks import charts, dashboard, deadletters, slo
from webhooks.endpoints import endpoint_secret_add, endpoint_secret_delete, secret_expiry_parse, webhook_endpoint_update
from webhooks.exceptions import WebhookError
from webhooks.models import DeadLetter, EndpointSecret, WebhookEndpoint, WebhookEvent
from webhooks.processing import webhook_event_canonical_events
from webhooks.receiving import webhook_event_body
from webhooks.retention import payload_removed_reason
from webhooks.throttling import sources_parse

logger = logging.getLogger(__name__)


class EndpointSecretInline(admin.TabularInline):
    """Secrets are shown, never edited here: the endpoint form adds them and the inline's delete
    boxes go through the services (WebhookEndpointAdmin.save_formset), so every change bumps the
    endpoint's version and is audited."""

    model = EndpointSecret
    extra = 0
    fields = ["kind", "hint", "fingerprint", "created_at", "expires_at"]
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
    expire_others_in = forms.CharField(
        required=False,
        help_text="With a new secret: the other secrets stop verifying after this long (24h, 30m, 7d; 0 = now).",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["slug", "scheme", "description", "is_active", "mode", "allowed_sources"]
        help_texts = {"allowed_sources": 'Networks deliveries may come from, e.g. ["192.0.2.0/24"]; [] accepts any address.'}

    def clean_allowed_sources(self):
        try:
            return sources_parse(self.cleaned_data.get("allowed_sources") or [])
        except WebhookError as exc:
            raise ValidationError(exc.message) from None

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
        expire = cleaned.get("expire_others_in")
        cleaned["expire_others_delta"] = None
        if expire:
            if not secret:
                raise ValidationError({"expire_others_in": "only with a new secret (a roll)"})
            try:
                cleaned["expire_others_delta"] = secret_expiry_parse(expire)
            except WebhookError as exc:
                raise ValidationError({"expire_others_in": exc.message}) from None
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
        if change:
            # Through the service: it audits what changes (`endpoint.changed`) and never writes
            # secrets_version from this copy, which a concurrent secret change may have outdated.
            webhook_endpoint_update(
                endpoint=obj, actor=str(request.user.pk), source="admin",
                **{name: form.cleaned_data[name] for name in WebhookEndpointForm.Meta.fields},
            )
        else:
            super().save_model(request, obj, form, change)
        if form.cleaned_data.get("new_secret"):
            endpoint_secret_add(
                endpoint=obj, secret=form.cleaned_data["new_secret"],
                expire_others_in=form.cleaned_data.get("expire_others_delta"), actor=str(request.user.pk), source="admin",
            )

    def delete_model(self, request, obj):
        self._secrets_delete(request, [obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        self._secrets_delete(request, queryset)
        super().delete_queryset(request, queryset)

    def _secrets_delete(self, request, endpoints):
        # Through the service, so the removals are audited like any other (not a silent cascade).
        for secret_id in EndpointSecret.objects.filter(endpoint__in=list(endpoints)).values_list("pk", flat=True):
            endpoint_secret_delete(secret_id=secret_id, actor=str(request.user.pk), source="admin")

    def save_formset(self, request, form, formset, change):
        if formset.model is not EndpointSecret:
            return super().save_formset(request, form, formset, change)
        # commit=False: Django only lists the rows ticked for deletion; the service deletes them.
        formset.save(commit=False)
        for row in formset.deleted_objects:
            endpoint_secret_delete(secret_id=row.pk, actor=str(request.user.pk), source="admin")


# --- Who may do what ---------------------------------------------------------------------------------


def user_is_operator(user) -> bool:
    """Members of `operators` (and superusers) act on the failure path; nobody else, whatever perms."""
    if not (user and user.is_active and user.is_authenticated):
        return False
    cached = getattr(user, "_payhook_is_operator", None)
    if cached is None:
        cached = user.is_superuser or user.groups.filter(name=OPERATORS).exists()
        user._payhook_is_operator = cached
    return cached


def _pre(text: str):
    return format_html('<pre style="white-space: pre-wrap; max-width: 100em">{}</pre>', text)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none waiting"
    return timesince(timezone.now() - timedelta(seconds=seconds)) if seconds >= 60 else f"{seconds:.0f} seconds"


# --- Stored events -------------------------------------------------------------------------------------

# How many breaching payments the `slo=breached` filter lists (the newest; the index row counts them all).
SLO_FILTER_LIMIT = 500


class ProvisioningSloFilter(admin.SimpleListFilter):
    """Payments older than PROVISIONING_SLO_SECONDS whose entitlement is still missing (webhooks/slo.py)."""

    title = "provisioning SLO"
    parameter_name = "slo"

    def lookups(self, request, model_admin):
        return [("breached", "Paid but not provisioned")]

    def queryset(self, request, queryset):
        if self.value() != "breached":
            return queryset
        report = slo.unprovisioned_payments(limit=SLO_FILTER_LIMIT)
        return queryset.filter(id__in=[payment.event_id for payment in report.payments])


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "event_type", "status", "endpoint", "received_at", "attempts"]
    list_filter = [ProvisioningSloFilter, "endpoint", "event_type", "status", "received_at"]
    search_fields = ["=provider_event_id", "=idempotency_key"]
    date_hierarchy = "received_at"
    list_select_related = ["endpoint"]
    show_full_result_count = False
    exclude = ["body_encrypted", "headers_encrypted"]
    readonly_fields = [
        "id", "endpoint", "idempotency_key", "provider_event_id", "event_type", "status", "content_hash",
        "received_at", "provider_created_at", "dispatched_at", "processed_at", "attempts", "last_error",
        "payload_removed_at", "dead_letter_links",
    ]
    actions = ["reprocess"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("body_encrypted", "headers_encrypted")

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        # Decrypted only for holders of the dedicated permission; the column is never listed.
        if obj is not None and request.user.has_perm("webhooks.view_raw_payload"):
            fields.append("raw_payload")
        return fields

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        return user_is_operator(request.user)

    @admin.display(description="raw payload (decrypted)")
    def raw_payload(self, obj):
        if obj.payload_removed_at is not None:
            return f"— {payload_removed_reason()} (on {obj.payload_removed_at:%Y-%m-%d})"
        body = webhook_event_body(event=obj)  # loads the deferred column for this one row
        try:
            text = json.dumps(json.loads(body), indent=2, sort_keys=True)
        except ValueError:
            text = body.decode("utf-8", errors="replace")
        return _pre(text)

    @admin.display(description="dead letters")
    def dead_letter_links(self, obj):
        if not getattr(obj, "viewer_is_operator", False):
            return "—"
        rows = list(obj.dead_letters.values_list("id", "status", "error_type")[:10])
        if not rows:
            return "—"
        return format_html(
            "<br>".join(["{}"] * len(rows)),
            *[
                format_html(
                    '<a href="{}">#{}</a> {} ({})', reverse("admin:webhooks_deadletter_change", args=[pk]), pk, error, status
                )
                for pk, status, error in rows
            ],
        )

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # Display methods get no request; the dead-letter links depend on who is looking.
            obj.viewer_is_operator = user_is_operator(request.user)
        return obj

    @admin.action(description="Reprocess selected events", permissions=["operate"])
    def reprocess(self, request, queryset):
        outcome = deadletters.webhook_events_reprocess_bulk(queryset=queryset, user=request.user, via="admin")
        self.message_user(
            request,
            f"Reprocessing {outcome.acted} event(s); skipped {outcome.skipped - outcome.payload_removed} still received "
            f"or being processed.",
            messages.SUCCESS if outcome.acted else messages.WARNING,
        )
        if outcome.payload_removed:
            self.message_user(
                request, f"Skipped {outcome.payload_removed} event(s): {payload_removed_reason()}.", messages.WARNING
            )


# --- Dead letters ----------------------------------------------------------------------------------------


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "task", "event_type", "error_type", "attempts", "age"]
    list_display_links = ["id", "task"]
    list_filter = ["status", "task_name", "error_type", "last_failed_at"]
    search_fields = ["=event__idempotency_key", "=event__provider_event_id", "=unit_key", "error_type", "error_message"]
    search_help_text = "Event id, idempotency key, provider event id, or words of the error."
    list_select_related = ["event"]
    list_per_page = 50
    show_full_result_count = False
    ordering = ["-last_failed_at", "-id"]
    actions = ["replay", "resolve", "discard"]
    fieldsets = [
        ("Failure", {"fields": ["status", "task_name", "error_type", "error_message", "attempts", "occurrences",
                                "first_failed_at", "last_failed_at", "age"]}),
        ("Event", {"fields": ["event_link", "event_type", "idempotency_key", "args", "unit_key"]}),
        ("Traceback", {"fields": ["traceback_display"]}),
        ("Canonical events", {"fields": ["canonical_events_display"]}),
        ("Operator", {"fields": ["acted_by", "acted_at", "note"]}),
    ]
    readonly_fields = [
        "status", "task_name", "error_type", "error_message", "attempts", "occurrences", "first_failed_at",
        "last_failed_at", "age", "event_link", "event_type", "idempotency_key", "args", "unit_key",
        "traceback_display", "canonical_events_display", "acted_by", "acted_at", "note",
    ]

    def get_queryset(self, request):
        return (
            super().get_queryset(request)
            .select_related("event", "acted_by")
            .defer("event__body_encrypted", "event__headers_encrypted")
        )

    def get_search_results(self, request, queryset, search_term):
        # An event id is a UUID: match it on the indexed foreign key rather than as text.
        try:
            event_id = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(event_id=event_id), False

    # `support` has no dead-letter permissions, and the group check below keeps it that way even
    # if someone grants them by mistake: the contract says support never sees dead letters.
    def has_module_permission(self, request):
        return user_is_operator(request.user) and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return user_is_operator(request.user) and super().has_view_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return False  # rows change only through the actions, never by editing fields

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        return user_is_operator(request.user) and request.user.has_perm("webhooks.change_deadletter")

    # --- columns and detail fields

    @admin.display(description="task", ordering="task_name")
    def task(self, obj):
        # The function name is what operators recognise; the dotted path stays in the tooltip.
        return format_html('<span title="{}">{}</span>', obj.task_name, obj.task_name.rsplit(".", 1)[-1])

    @admin.display(description="event type", ordering="event__event_type")
    def event_type(self, obj):
        return obj.event.event_type if obj.event_id else "—"

    @admin.display(description="idempotency key")
    def idempotency_key(self, obj):
        return obj.event.idempotency_key if obj.event_id else "—"

    @admin.display(description="age", ordering="first_failed_at")
    def age(self, obj):
        return timesince(obj.first_failed_at)

    @admin.display(description="stored event")
    def event_link(self, obj):
        if not obj.event_id:
            return "— (this unit of work has no stored event)"
        url = reverse("admin:webhooks_webhookevent_change", args=[obj.event_id])
        return format_html('<a href="{}">{}</a> ({})', url, obj.event_id, obj.event.status)

    @admin.display(description="traceback (PII-scrubbed)")
    def traceback_display(self, obj):
        return _pre(obj.traceback or "(none recorded)")

    @admin.display(description="canonical events")
    def canonical_events_display(self, obj):
        if not obj.event_id:
            return "not available (no stored event)"
        try:
            events = webhook_event_canonical_events(event=obj.event)
        except Exception as exc:
            # The event is dead-lettered, often because mapping it fails: the page must still render.
            logger.info("canonical events unavailable for dead letter %s: %s", obj.pk, type(exc).__name__)
            return f"not available ({type(exc).__name__})"
        return _pre(json.dumps(events, indent=2, sort_keys=True))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_operate": self.has_operate_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    # --- actions

    @admin.action(description="Replay selected open dead letters", permissions=["operate"])
    def replay(self, request, queryset):
        outcome = deadletters.dead_letter_replay_bulk(queryset=queryset, user=request.user)
        others = outcome.skipped - outcome.payload_removed
        skipped = f"; skipped {others} that are not open or have no stored event" if others else ""
        self.message_user(
            request, f"Replayed {outcome.acted} dead letter(s){skipped}.", messages.SUCCESS if outcome.acted else messages.WARNING
        )
        if outcome.payload_removed:
            self.message_user(
                request, f"Skipped {outcome.payload_removed} dead letter(s): {payload_removed_reason()}.", messages.WARNING
            )

    @admin.action(description="Resolve selected dead letters (with a note)", permissions=["operate"])
    def resolve(self, request, queryset):
        return self._close_with_note(request, queryset, action="resolve", verb="Resolve", done="Resolved",
                                     service=deadletters.dead_letter_resolve_bulk)

    @admin.action(description="Discard selected dead letters (with a note)", permissions=["operate"])
    def discard(self, request, queryset):
        return self._close_with_note(request, queryset, action="discard", verb="Discard", done="Discarded",
                                     service=deadletters.dead_letter_discard_bulk)

    def _close_with_note(self, request, queryset, *, action, verb, done, service):
        def apply(note):
            outcome = service(queryset=queryset, user=request.user, note=note)
            skipped = f"; skipped {outcome.skipped} already resolved or discarded" if outcome.skipped else ""
            self.message_user(request, f"{done} {outcome.acted} dead letter(s){skipped}.",
                              messages.SUCCESS if outcome.acted else messages.WARNING)

        return admin_action_with_note(
            self, request, queryset, action=action, verb=verb, noun="dead letter(s)",
            explanation="Rows already resolved or discarded are left as they are. The note is required and stays on each row.",
            preview_headers=["id", "task", "error", "status"],
            preview_rows=lambda qs: list(qs.values_list("id", "task_name", "error_type", "status")[:20]),
            apply=apply, form_id="dead-letter-note-form",
        )


# --- Admin index: the failure path and the last 24 hours at a glance ---------------------------------------

admin.site.index_template = "admin/payhook_index.html"
_site_index = admin.site.index

# What the index lists of the SLO's breaching payments: enough to open one, never a wall of ids.
SLO_ROW_EVENTS = 5


def _ingestion_charts(board: dashboard.IngestionDashboard) -> dict:
    """The three charts and, for the table under them, each hour's numbers."""
    hours, now = board.window.hours, board.window.now
    outcomes = [
        charts.Series(key=outcome, label=outcome, values=[hour[outcome] for hour in board.outcomes])
        for outcome in dashboard.OUTCOMES
    ]
    ages = [age or 0.0 for age in board.backlog_age_seconds]
    rows = [
        {
            "hour": hour,
            "outcomes": [counts[outcome] for outcome in dashboard.OUTCOMES],
            "dead_letters_open": depth,
            "backlog_age": _age(age) if age is not None else "—",
        }
        for hour, counts, depth, age in zip(hours, board.outcomes, board.dead_letters_open, board.backlog_age_seconds,
                                            strict=True)
    ]
    return {
        "outcomes_chart": charts.stacked_bar_chart(
            chart_id="chart-outcomes", title="Events received per hour, by outcome", hours=hours, series=outcomes,
            y_label="events",
        ),
        "dead_letters_chart": charts.line_chart(
            chart_id="chart-dlq-depth", title="Open dead letters (DLQ depth) at the end of each hour", hours=hours,
            values=board.dead_letters_open, series_key="dead", now=now, area=True, y_label="open",
        ),
        "backlog_chart": charts.line_chart(
            chart_id="chart-backlog-age", title="Oldest unfinished event's age at the end of each hour", hours=hours,
            values=ages, series_key="pending", now=now, unit_for=charts.duration_unit, y_label="waiting",
        ),
        "outcomes": dashboard.OUTCOMES,
        "rows": rows,
        "start": board.window.start,
        "now": now,
    }


def _slo_row(report: slo.SloReport) -> dict:
    return {
        "count": report.count,
        "slo": _age(report.slo_seconds),
        "oldest_age": _age(report.oldest_age_seconds) if report.oldest_age_seconds is not None else "—",
        "payments": [
            {"event_id": payment.event_id, "event_type": payment.event_type, "age": _age(payment.age_seconds),
             "url": reverse("admin:webhooks_webhookevent_change", args=[payment.event_id])}
            for payment in report.payments[:SLO_ROW_EVENTS]
        ],
        "changelist_url": reverse("admin:webhooks_webhookevent_changelist") + f"?{ProvisioningSloFilter.parameter_name}=breached",
    }


def _admin_index_for_operators(request, extra_context=None):
    # Django's default site has no hook for index context; wrapping its bound `index` keeps the
    # project on the default site. Only operators see the figures: support never sees the DLQ.
    extra_context = dict(extra_context or {})
    if user_is_operator(request.user):
        stats = deadletters.dead_letter_stats()
        extra_context["dead_letter_stats"] = {
            **stats,
            "oldest_unprocessed_event_age": _age(stats["oldest_unprocessed_event_age_seconds"]),
            "oldest_open_dead_letter_age": _age(stats["oldest_open_dead_letter_age_seconds"]),
        }
        extra_context["provisioning_slo"] = _slo_row(slo.unprovisioned_payments(limit=SLO_ROW_EVENTS))
        extra_context["ingestion"] = _ingestion_charts(dashboard.ingestion_dashboard_cached())
    return _site_index(request, extra_context)


admin.site.index = _admin_index_for_operators
