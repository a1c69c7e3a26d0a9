from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView

from config.display import id_display, source_display
from config.exceptions import ApplicationError
from config.pagination import CursorPagination
from config.permissions import OPERATORS, SERVICES, SUPPORT, in_groups
from fulfillment.models import Entitlement
from fulfillment.selectors import entitlement_list


class FilterRequired(ApplicationError):
    code = "filter_required"


class EntitlementPagination(CursorPagination):
    ordering = ("customer_id", "key", "source")
    page_size_query_param = "page_size"
    max_page_size = 500


class IdDisplayField(serializers.CharField):
    """An id as shown (config.display.id_display): masked when it carries personal data (an email)."""

    def to_representation(self, value):
        return id_display(value)


class SourceDisplayField(serializers.CharField):
    def to_representation(self, value):
        return source_display(value)


class EntitlementListApi(ListAPIView):
    """Entitlements of one user (`?user=<id>`) or provider customer (`?customer=cus_…`); active only
    unless `?include_inactive=true`."""

    permission_classes = [in_groups(OPERATORS, SUPPORT, SERVICES)]
    pagination_class = EntitlementPagination

    class FilterSerializer(serializers.Serializer):
        user = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)  # bigint
        customer = serializers.CharField(required=False, max_length=255)
        include_inactive = serializers.BooleanField(required=False, default=False)

    class OutputSerializer(serializers.Serializer):
        key = serializers.CharField()
        status = serializers.CharField()
        source = SourceDisplayField()
        user = serializers.IntegerField(source="customer.user_id", allow_null=True)
        # The filter `?customer=` matches the real id; the answer masks one that is an email.
        customer = IdDisplayField(source="customer.provider_customer_id", allow_null=True)
        granted_at = serializers.DateTimeField(allow_null=True)
        expires_at = serializers.DateTimeField(allow_null=True)
        revoked_at = serializers.DateTimeField(allow_null=True)
        revoke_reason = serializers.CharField()

    serializer_class = OutputSerializer

    @extend_schema(parameters=[FilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no query
            return Entitlement.objects.none()
        filters = self.FilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        if "user" not in params and "customer" not in params:
            raise FilterRequired("pass ?user=<id> or ?customer=<provider customer id>")
        return entitlement_list(
            user_id=params.get("user"), customer=params.get("customer"), include_inactive=params["include_inactive"]
        )
