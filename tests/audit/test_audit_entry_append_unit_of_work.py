import pytest
from django.core.management import call_command
from django.db import transaction

from audit.exceptions import AuditError
from audit.models import AuditEntry
from audit.services import audit_entry_append
from config.unit_of_work import UnitOfWork

pytestmark = pytest.mark.django_db


def test_appends_to_a_unit_of_work_are_written_in_order_when_it_is_flushed():
    uow = UnitOfWork()
    audit_entry_append(action="webhook.received", data={"type": "invoice.paid"}, dedup_key="r:1", uow=uow)
    audit_entry_append(action="entitlement.granted", subjects={"email": "a@example.com"}, dedup_key="g:1", uow=uow)
    audit_entry_append(action="entitlement.granted", dedup_key="g:1", uow=uow)  # a repeat within the unit
    assert AuditEntry.objects.count() == 0

    uow.flush()

    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "webhook.received", "entitlement.granted",
    ]
    call_command("verify_audit_chain", stdout=open("/dev/null", "w"))


def test_nothing_is_written_when_the_transaction_raises_before_the_flush():
    with pytest.raises(RuntimeError), transaction.atomic():
        uow = UnitOfWork()
        audit_entry_append(action="webhook.received", dedup_key="r:2", uow=uow)
        raise RuntimeError("fulfilment failed")

    assert AuditEntry.objects.count() == 0


def test_an_invalid_entry_still_raises_where_it_is_made():
    uow = UnitOfWork()
    with pytest.raises(AuditError):
        audit_entry_append(action="no.such.action", uow=uow)
    uow.flush()

    assert AuditEntry.objects.count() == 0


def test_without_a_unit_of_work_the_entry_is_written_at_once():
    entry = audit_entry_append(action="webhook.received", dedup_key="r:3")

    assert AuditEntry.objects.get().pk == entry.pk
