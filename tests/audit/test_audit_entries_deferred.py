import pytest
from django.core.management import call_command
from django.db import transaction

from audit.exceptions import AuditError
from audit.models import AuditEntry
from audit.services import audit_entries_deferred, audit_entry_append

pytestmark = pytest.mark.django_db


def test_deferred_appends_are_written_in_order_when_the_block_ends():
    with audit_entries_deferred():
        audit_entry_append(action="webhook.received", data={"type": "invoice.paid"}, dedup_key="r:1")
        audit_entry_append(action="entitlement.granted", subjects={"email": "a@example.com"}, dedup_key="g:1")
        audit_entry_append(action="entitlement.granted", dedup_key="g:1")  # a repeat within the block
        assert AuditEntry.objects.count() == 0

    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "webhook.received", "entitlement.granted",
    ]
    call_command("verify_audit_chain", stdout=open("/dev/null", "w"))


def test_nothing_is_written_when_the_block_raises():
    with pytest.raises(RuntimeError), transaction.atomic(), audit_entries_deferred():
        audit_entry_append(action="webhook.received", dedup_key="r:2")
        raise RuntimeError("fulfilment failed")

    assert AuditEntry.objects.count() == 0


def test_an_invalid_entry_still_raises_where_it_is_made():
    with pytest.raises(AuditError), audit_entries_deferred():
        audit_entry_append(action="no.such.action")
