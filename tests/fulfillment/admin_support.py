"""Shared set-up of the fulfilment admin tests: a superuser's client and a customer with rows."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from audit.models import AuditEntry
from fulfillment.models import Customer, Entitlement


def superuser_create(username: str = "root"):
    return get_user_model().objects.create_superuser(username, email=f"{username}@example.invalid", password="pw")


def customer_create(*, user=None, provider_customer_id: str = "cus_A") -> Customer:
    return Customer.objects.create(provider="stripe", key=provider_customer_id, provider_customer_id=provider_customer_id, user=user)


def entitlement_create(*, customer: Customer, key: str = "pro", status: str = Entitlement.Status.ACTIVE, **fields) -> Entitlement:
    at = timezone.now() - timedelta(hours=1)
    return Entitlement.objects.create(
        customer=customer, key=key, source=fields.pop("source", "payment:pi_1"), payment_intent="pi_1", status=status,
        state_at=at, granted_at=at, **fields,
    )


def audit_entries(action: str | None = None) -> list[AuditEntry]:
    entries = AuditEntry.objects.order_by("id")
    return list(entries.filter(action=action) if action else entries)
