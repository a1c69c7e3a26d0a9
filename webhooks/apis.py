import logging

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from config.exceptions import ApplicationError
from config.filters import UtcDateTimeFilter
from config.pagination import CursorPagination
from config.parsers import API_PARSERS
from config.permissions import OPERATORS, SUPPORT, in_groups
from webhooks.deadletters import dead_letter_discard, dead_letter_list, dead_letter_replay, dead_letter_resolve
from webhooks.models import DeadLetter, WebhookEvent
from webhooks.processing import webhook_event_canonical_events
from webhooks.selectors import webhook_event_list

logger = logging.getLogger(__name__)


class EventFilter(django_filters.FilterSet):
    endpoint = django_filters.CharFilter(field_name="endpoint__slug")
    type = django_filters.CharFilter(field_name="event_type")
    status = django_filters.ChoiceFilter(choices=WebhookEvent.Status.choices)
    since = UtcDateTimeFilter(field_name="received_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="received_at", lookup_expr="lt")

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


class EventDetailOutputSerializer(EventOutputSerializer):
    """The detail adds the canonical events fulfilment consumed: ids, amounts and keyed hashes only
    (a buyer's email is carried encrypted), rebuilt from the stored bytes."""

    canonical_events = serializers.SerializerMethodField()

    class Meta(EventOutputSerializer.Meta):
        fields = [*EventOutputSerializer.Meta.fields, "canonical_events"]

    def get_canonical_events(self, event) -> list[dict] | None:
        try:
            return webhook_event_canonical_events(event=event)
        except (ApplicationError, ValueError):
            return None  # unreadable or invalid: the dead letter says why
        except Exception as exc:  # noqa: BLE001 - a signed payload of odd shapes must not make a read fail
            # Verified is not well-formed: a provider (or a leaked secret) can sign `"type": {}` or
            # `"metadata": []`. The event's dead letter holds the cause; the detail still answers.
            logger.warning("canonical events not shown: event=%s error=%s", event.pk, type(exc).__name__)
            return None


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

    def get_serializer_class(self):
        return EventDetailOutputSerializer if self.action == "retrieve" else EventOutputSerializer

    def get_object(self):
        # The detail needs the stored bytes to rebuild the canonical events; lists never load them.
        event = super().get_object()
        event.refresh_from_db(fields=["body_encrypted"])
        return event


# --- Dead letters (operators only) -------------------------------------------------------------------


class DeadLetterFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeadLetter.Status.choices)
    task = django_filters.CharFilter(field_name="task_name")
    since = UtcDateTimeFilter(field_name="last_failed_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="last_failed_at", lookup_expr="lt")

    class Meta:
        model = DeadLetter
        fields = ["status", "task", "since", "until"]


class DeadLetterOutputSerializer(serializers.ModelSerializer):
    task = serializers.CharField(source="task_name")
    event_id = serializers.UUIDField(read_only=True, allow_null=True)
    event_type = serializers.CharField(source="event.event_type", default=None, read_only=True)
    idempotency_key = serializers.CharField(source="event.idempotency_key", default=None, read_only=True)
    acted_by = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)  # null until someone acts

    class Meta:
        model = DeadLetter
        fields = [
            "id", "unit_key", "task", "args", "event_id", "event_type", "idempotency_key", "error_type",
            "error_message", "attempts", "occurrences", "first_failed_at", "last_failed_at", "status",
            "acted_by", "acted_at", "note",
        ]


class DeadLetterDetailOutputSerializer(DeadLetterOutputSerializer):
    class Meta(DeadLetterOutputSerializer.Meta):
        fields = [*DeadLetterOutputSerializer.Meta.fields, "traceback"]


class DeadLetterActionInputSerializer(serializers.Serializer):
    # Blank is accepted here so that a missing note reaches the service, which owns the rule.
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class DeadLetterPagination(CursorPagination):
    ordering = ("-last_failed_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


class DeadLetterViewSet(viewsets.ReadOnlyModelViewSet):
    """Work that failed for good; operators replay, resolve or discard it."""

    permission_classes = [in_groups(OPERATORS)]
    parser_classes = API_PARSERS
    filterset_class = DeadLetterFilter
    pagination_class = DeadLetterPagination

    def get_queryset(self):
        return dead_letter_list()

    def get_serializer_class(self):
        return DeadLetterDetailOutputSerializer if self.action != "list" else DeadLetterOutputSerializer

    def _act(self, request, service):
        data = DeadLetterActionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = service(dead_letter=self.get_object(), user=request.user, note=data.validated_data["note"])
        return Response(DeadLetterDetailOutputSerializer(dead_letter_list().get(pk=row.pk)).data)

    @extend_schema(request=DeadLetterActionInputSerializer, responses=DeadLetterDetailOutputSerializer)
    @action(detail=True, methods=["post"])
    def replay(self, request, pk=None):
        return self._act(request, dead_letter_replay)

    @extend_schema(request=DeadLetterActionInputSerializer, responses=DeadLetterDetailOutputSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        return self._act(request, dead_letter_resolve)

    @extend_schema(request=DeadLetterActionInputSerializer, responses=DeadLetterDetailOutputSerializer)
    @action(detail=True, methods=["post"])
    def discard(self, request, pk=None):
        return self._act(request, dead_letter_discard)
