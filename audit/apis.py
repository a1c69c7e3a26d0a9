import django_filters
from rest_framework import generics, serializers

from audit.models import AuditAction, AuditEntry
from audit.selectors import audit_entry_filter_subject, audit_entry_list
from config.display import search_term_problem
from config.exceptions import ApplicationError
from config.filters import UtcDateTimeFilter
from config.pagination import CursorPagination
from config.permissions import SUPPORT, in_groups


class InvalidAuditQuery(ApplicationError):
    code = "invalid_query"


class AuditEntryFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="filter_q", help_text="An email or other identifier; matched through its keyed hash, never stored."
    )
    action = django_filters.ChoiceFilter(choices=AuditAction.choices)
    event = django_filters.UUIDFilter(field_name="event_id")
    since = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields = ["q", "action", "event", "since", "until"]

    def filter_q(self, queryset, name, value):
        return audit_entry_filter_subject(queryset, q=value) if value.strip() else queryset


class AuditEntryOutputSerializer(serializers.ModelSerializer):
    event = serializers.UUIDField(source="event_id", allow_null=True)

    class Meta:
        model = AuditEntry
        # chain_shard/chain_seq: the entry's position; prev_hash is the previous entry of the same shard.
        fields = ["id", "action", "occurred_at", "actor", "event", "data", "chain_shard", "chain_seq", "prev_hash", "entry_hash"]


class AuditEntryPagination(CursorPagination):
    ordering = "-id"  # unique and increasing (a sequence; gaps allowed), as a cursor needs
    page_size_query_param = "page_size"
    max_page_size = 500


class AuditEntryListApi(generics.ListAPIView):
    """The audit log, newest first, for support staff. `data` is stored redacted."""

    permission_classes = [in_groups(SUPPORT)]
    serializer_class = AuditEntryOutputSerializer
    filterset_class = AuditEntryFilter
    pagination_class = AuditEntryPagination

    def get_queryset(self):
        return audit_entry_list()

    def filter_queryset(self, queryset):
        # `q` checked raw, as the customer lookup checks it (config.display.search_term_problem):
        # the form field would strip a trailing newline and answer a NUL with its own message.
        problem = search_term_problem(self.request.query_params.get("q"))
        if problem:
            raise InvalidAuditQuery(problem)
        return super().filter_queryset(queryset)
