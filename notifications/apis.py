import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from config.pagination import CursorPagination
from config.parsers import API_PARSERS
from config.permissions import OPERATORS, SUPPORT, IsUserThemself, in_groups
from notifications.models import Category, Channel, Notification
from notifications.selectors import notification_list, notification_preferences_effective, notification_user_get
from notifications.services import notification_preferences_update

StaffReaders = in_groups(OPERATORS, SUPPORT)
# Preferences: operators read; support (audited with the actor) and the user themself also change them.
PreferencesStaff = in_groups(OPERATORS, read_only=True) | in_groups(SUPPORT)


class NotificationFilter(django_filters.FilterSet):
    user = django_filters.NumberFilter(field_name="user_id", min_value=1, max_value=2**63 - 1)  # bigint
    event = django_filters.UUIDFilter(field_name="event_id")
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    category = django_filters.ChoiceFilter(choices=Category.choices)
    status = django_filters.ChoiceFilter(choices=Notification.Status.choices)
    template = django_filters.CharFilter()

    class Meta:
        model = Notification
        fields = ["user", "event", "channel", "category", "status", "template"]


class NotificationPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


class NotificationListApi(ListAPIView):
    """Notifications of every status (sent, suppressed with its reason, sending, failed); never
    the recipient's address. Operators and support read all; a user reads their own (`?user=<own id>`)."""

    @extend_schema_serializer(component_name="Notification")
    class OutputSerializer(serializers.ModelSerializer):
        event = serializers.UUIDField(source="event_id")
        user = serializers.IntegerField(source="user_id")

        class Meta:
            model = Notification
            fields = [
                "id", "event", "user", "channel", "category", "template", "status", "reason", "error_type",
                "subject", "body", "created_at", "sent_at",
            ]

    permission_classes = [StaffReaders | IsUserThemself]
    serializer_class = OutputSerializer
    filterset_class = NotificationFilter
    pagination_class = NotificationPagination

    def get_queryset(self):
        return notification_list()


class NotificationPreferencesApi(APIView):
    """The effective category × channel matrix (defaults included); PUT applies a partial or full one."""

    permission_classes = [PreferencesStaff | IsUserThemself]
    parser_classes = API_PARSERS

    @extend_schema_serializer(component_name="NotificationPreferencesInput")
    class InputSerializer(serializers.Serializer):
        preferences = serializers.DictField(child=serializers.DictField(child=serializers.BooleanField()))

    @extend_schema_serializer(component_name="NotificationPreferences")
    class OutputSerializer(serializers.Serializer):
        user = serializers.IntegerField()
        preferences = serializers.DictField(child=serializers.DictField(child=serializers.BooleanField()))

    @extend_schema(responses=OutputSerializer)
    def get(self, request, user_id: int):
        user = notification_user_get(user_id=user_id)
        matrix = notification_preferences_effective(user_id=user.pk)
        return Response(self.OutputSerializer({"user": user.pk, "preferences": matrix}).data)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def put(self, request, user_id: int):
        user = notification_user_get(user_id=user_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        matrix = notification_preferences_update(
            user=user, preferences=serializer.validated_data["preferences"], actor=str(request.user.pk)
        )
        return Response(self.OutputSerializer({"user": user.pk, "preferences": matrix}).data)
