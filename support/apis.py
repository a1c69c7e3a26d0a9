from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_throttling import ApiAnonThrottle, ApiScopedThrottle, ApiUserThrottle
from config.permissions import SUPPORT, in_groups
from support.selectors import MAX_QUERY_LENGTH, customer_timeline
from support.services import customer_lookup_audit


class CustomerLookupLinksSerializer(serializers.Serializer):
    event = serializers.UUIDField(allow_null=True)
    audit_entry = serializers.IntegerField(allow_null=True)
    entitlement = serializers.IntegerField(allow_null=True)
    notification = serializers.UUIDField(allow_null=True)
    dead_letter = serializers.IntegerField(allow_null=True)


class CustomerLookupItemSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=["event", "audit", "entitlement", "notification", "dead_letter", "refund"])
    title = serializers.CharField()
    status = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)
    detail = serializers.DictField(help_text="Ids, codes and times that depend on `kind`; never personal data.")
    links = CustomerLookupLinksSerializer()


class CustomerLookupEntitlementSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    status = serializers.CharField()
    active = serializers.BooleanField()
    source = serializers.CharField()
    payment = serializers.CharField(allow_blank=True, help_text="Masked when it carries personal data (docs/support.md).")
    customer = serializers.CharField(allow_null=True, help_text="The provider customer id; masked when it carries personal data.")
    user = serializers.IntegerField(allow_null=True)
    granted_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    revoke_reason = serializers.CharField(allow_blank=True)
    expires_at = serializers.DateTimeField(allow_null=True)


class CustomerLookupSerializer(serializers.Serializer):
    query = serializers.CharField(help_text="The term as typed (stripped): the only value echoed.")
    matched_kinds = serializers.ListField(child=serializers.CharField(), help_text="What the term was found as.")
    user_ids = serializers.ListField(child=serializers.IntegerField())
    customer_ids = serializers.ListField(
        child=serializers.CharField(), help_text="Provider customer ids; one that carries personal data (an email) is masked."
    )
    payment_ids = serializers.ListField(child=serializers.CharField())
    subscription_ids = serializers.ListField(child=serializers.CharField())
    entitlements = CustomerLookupEntitlementSerializer(many=True)
    counts = serializers.DictField(child=serializers.IntegerField())
    items = CustomerLookupItemSerializer(many=True, help_text="The timeline, newest first.")
    capped = serializers.ListField(child=serializers.CharField(), help_text="Reads that hit their cap: the story may be longer.")
    truncated = serializers.BooleanField(help_text="The timeline was cut to its newest items.")


class CustomerLookupApi(APIView):
    """One customer's whole story, newest first, for support staff: stored events, entitlement
    changes, notifications (sent or suppressed, and why), dead letters and audit entries.

    `q` is an email, a provider customer id or a payment id; it is matched through its keyed hashes
    and never stored. The answer holds ids, types, statuses and times: no personal data, except the
    term itself, echoed as `query`.
    """

    permission_classes = [in_groups(SUPPORT)]
    # Each lookup holds a sync web worker ~0.2 s: its own budget per account (API_THROTTLE_CUSTOMER_LOOKUP),
    # besides the API's, so support cannot starve ingestion.
    throttle_classes = [ApiUserThrottle, ApiAnonThrottle, ApiScopedThrottle]
    throttle_scope = "customer_lookup"

    class FilterSerializer(serializers.Serializer):
        q = serializers.CharField(max_length=MAX_QUERY_LENGTH, help_text="An email, provider customer id or payment id.")

    @extend_schema(parameters=[FilterSerializer], responses=CustomerLookupSerializer)
    def get(self, request):
        # The raw value, not the serializer's (which strips a trailing newline and answers a NUL with
        # its length message): customer_timeline refuses control characters before it strips spaces.
        timeline = customer_timeline(q=request.query_params.get("q"))
        customer_lookup_audit(actor=str(request.user.pk), timeline=timeline, via="api")
        return Response(CustomerLookupSerializer(timeline).data)
