import uuid

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property

from audit.models import AuditAction, AuditEntry
from audit.selectors import audit_entry_count_estimate, audit_entry_filter_subject
from config.admin import ReadOnlyAdminMixin


class AuditActionListFilter(admin.SimpleListFilter):
    """The actions, listed from code: Django's default filter for a plain column asks the database
    for its DISTINCT values, a scan of the whole log on every changelist page (seconds at 10 M)."""

    title = "action"
    parameter_name = "action__exact"  # the default filter's parameter: existing links keep working

    def lookups(self, request, model_admin):
        return AuditAction.choices

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


class AuditEntryPaginator(Paginator):
    """Counts the unfiltered log from the planner's estimate: an exact COUNT(*) reads all of it.

    A search or a filter still gets its exact count (it reads only the matching entries).
    """

    @cached_property
    def count(self):
        if not self.object_list.query.where:
            estimate = audit_entry_count_estimate()
            if estimate is not None:
                return estimate
        return super().count


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: the audit log is append-only, here as in the database."""

    # Never `data` in the list: even redacted, payload fragments do not belong in a scan view.
    list_display = ["id", "action", "occurred_at", "actor", "event_id"]
    list_filter = [AuditActionListFilter, "occurred_at"]
    search_help_text = "An event id, or an identifier (email, customer id, user id) matched by its keyed hash."
    search_fields = ["event_id"]  # enables the box; get_search_results does the matching
    fields = [
        "id", "action", "occurred_at", "actor", "event_id", "data", "dedup_key", "chain_shard", "chain_seq", "prev_hash",
        "entry_hash", "subject_kinds",
    ]
    readonly_fields = fields
    ordering = ["-id"]
    show_full_result_count = False  # COUNT(*) over a large log on every page is needless
    paginator = AuditEntryPaginator

    @admin.display(description="subjects (hashed)")
    def subject_kinds(self, obj):
        return ", ".join(f"{s.kind}:{s.value_hash[:12]}…" for s in obj.subjects.all()) or "—"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(event_id=uuid.UUID(term)), False
        except ValueError:
            return audit_entry_filter_subject(queryset, q=term), False
