import django_filters
from rest_framework import serializers, viewsets
from rest_framework.pagination import CursorPagination

from config.permissions import OPERATORS, SUPPORT, in_groups
from webhooks.models import WebhookEvent
from webhooks.selectors import webhook_event_list


class EventFilter(django_filters.FilterSet):
    endpoint = django_filters.CharFilter(field_name="endpoint__slug")
    type = django_filters.CharFilter(field_name="event_type")
    status = django_filters.ChoiceFilter(choices=WebhookEvent.Status.choices)
    since = django_filters.IsoDateTimeFilter(field_name="received_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="received_at", lookup_expr="lt")

    class Meta:
        model = WebhookEvent
        fields = ["endpoint", "type", "status", "since", "until"]


class EventOutputSerializer(serializers.ModelSerializer):
    endpoint = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    type = serializers.CharField(source="event_type")

    class Meta:
        model = WebhookEvent
        fields = [
            "id", "endpoint", "idempotency_key", "provider_event_id", "type", "status", "received_at",
            "provider_created_at", "processed_at", "attempts", "last_error",
        ]


class EventPagination(CursorPagination):
    ordering = "-received_at"
    page_size_query_param = "page_size"
    max_page_size = 500


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    """Stored webhook events: metadata and status, never the raw body."""

    permission_classes = [in_groups(OPERATORS, SUPPORT)]
    serializer_class = EventOutputSerializer
    filterset_class = EventFilter
    pagination_class = EventPagination

    def get_queryset(self):
        return webhook_event_list()
