from django.db.models import Q, QuerySet
from django.utils import timezone

from fulfillment.models import Entitlement


def entitlement_list(*, user_id: int | None = None, customer: str | None = None, include_inactive: bool = False) -> QuerySet[Entitlement]:
    rows = Entitlement.objects.select_related("customer")
    if user_id is not None:
        rows = rows.filter(customer__user_id=user_id)
    if customer is not None:
        rows = rows.filter(customer__provider_customer_id=customer)
    if not include_inactive:
        rows = rows.filter(status=Entitlement.Status.ACTIVE).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
    return rows.order_by("customer_id", "key", "source")
