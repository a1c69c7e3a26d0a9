import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditChainHead, AuditEntry, AuditSubject
from audit.services import audit_entry_append
from tests.audit.conftest import used_head


def _execute(sql: str, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def entry(db):
    audit_entry_append(action="webhook.received", subjects={"email": "erin@example.com"})
    return audit_entry_append(action="entitlement.granted", subjects={"customer": "cus_1"}, data={"entitlement_key": "pro"})


@pytest.mark.django_db
class TestAppendOnlyAtTheDatabase:
    def test_an_update_of_an_entry_fails(self, entry):
        with pytest.raises(DatabaseError, match="append-only"):
            _execute("UPDATE audit_auditentry SET actor = '1' WHERE id = %s", [entry.id])
        assert AuditEntry.objects.get(pk=entry.pk).actor == "system"

    def test_a_delete_of_an_entry_fails(self, entry):
        with pytest.raises(DatabaseError):
            _execute("DELETE FROM audit_auditsubject WHERE entry_id = %s", [entry.id])
        with pytest.raises(DatabaseError):
            _execute("DELETE FROM audit_auditentry WHERE id = %s", [entry.id])
        assert AuditEntry.objects.count() == 2 and AuditSubject.objects.count() == 2

    def test_the_orm_cannot_change_or_delete_entries_either(self, entry):
        with pytest.raises(DatabaseError):
            with transaction.atomic():
                AuditEntry.objects.filter(pk=entry.pk).update(data={})
        with pytest.raises(DatabaseError):
            with transaction.atomic():
                AuditSubject.objects.filter(entry=entry).update(value_hash="0" * 64)

    def test_the_chain_head_only_advances_to_the_next_entry(self, entry):
        shard = entry.chain_shard
        first = AuditEntry.objects.get(pk=1)
        with pytest.raises(DatabaseError, match="advance"):
            _execute("UPDATE audit_auditchainhead SET last_seq = 1, last_hash = %s WHERE id = %s", [first.entry_hash, shard])
        with pytest.raises(DatabaseError, match="advance"):
            _execute("UPDATE audit_auditchainhead SET last_seq = 3, last_hash = 'forged' WHERE id = %s", [shard])
        # Another shard's head cannot take this shard's entries either.
        other = AuditChainHead.objects.exclude(pk=shard).values_list("id", flat=True).first()
        with pytest.raises(DatabaseError, match="advance"):
            _execute("UPDATE audit_auditchainhead SET last_seq = 1, last_hash = %s WHERE id = %s", [first.entry_hash, other])
        with pytest.raises(DatabaseError):
            _execute("DELETE FROM audit_auditchainhead")
        assert used_head().last_seq == 2 and used_head().id == shard


@pytest.mark.django_db(transaction=True)
class TestTransactionalTestsStillFlush:
    """pytest-django empties tables between transactional tests with TRUNCATE, as a superuser (the
    TRUNCATE trigger lets only a superuser through), and post_migrate puts the head back at genesis:
    each of these starts from an empty log, so the flush went through."""

    @pytest.mark.parametrize("run", [1, 2])
    def test_each_run_starts_a_fresh_chain(self, run):
        assert not AuditEntry.objects.exists()
        assert not AuditChainHead.objects.filter(last_seq__gt=0).exists()
        assert audit_entry_append(action="webhook.received", subjects={"user": "1"}).chain_seq == 1
