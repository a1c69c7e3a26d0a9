import threading
import uuid

import pytest
from django.db import connection, connections

from audit import chain
from audit.exceptions import AuditError, InvalidAuditActor, UnknownAuditAction, UnknownSubjectKind
from audit.models import AuditEntry, AuditSubject
from audit.selectors import audit_chain_verify
from audit.services import audit_entry_append
from config.blind_index import blind_index
from tests.audit.conftest import used_head, used_head_position
from tests.audit.pii import assert_no_pii, audit_table_texts


@pytest.mark.django_db
class TestAuditEntryAppend:
    def test_it_chains_each_entry_to_the_previous_one(self):
        first = audit_entry_append(action="webhook.received", event_id=uuid.uuid4(), data={"type": "invoice.paid"})
        second = audit_entry_append(action="entitlement.granted", actor="42", data={"entitlement_key": "pro"})
        assert (first.id, second.id) == (1, 2)
        assert first.prev_hash == chain.GENESIS_HASH
        assert second.prev_hash == first.entry_hash != second.entry_hash
        head = used_head()
        assert (head.last_seq, head.last_hash) == (2, second.entry_hash)
        assert audit_chain_verify() == (2, 2, second.entry_hash)

    def test_it_stores_only_the_actions_allowed_keys_of_their_kind(self):
        entry = audit_entry_append(
            action="webhook.received",
            data={"provider_event_id": "evt_1", "type": "bob@example.com", "customer_details": {"email": "bob@example.com"},
                  "note": "call +44 20 7946 0958"},
        )
        stored = AuditEntry.objects.get(pk=entry.pk).data
        assert stored == {"provider_event_id": "evt_1", "type": "[dropped]"}

    def test_it_stores_subjects_only_as_keyed_hashes(self):
        entry = audit_entry_append(
            action="entitlement.granted",
            subjects={"email": " Alice@Example.com ", "customer": "cus_123", "user": "42"},
            data={"description": "receipt to ALICE@example.com (alice) for cus_123", "entitlement": "pro"},
        )
        assert sorted(entry.subjects.values_list("kind", "value_hash")) == [
            ("customer", blind_index("cus_123", kind="customer")),
            ("email", blind_index("alice@example.com", kind="email")),
            ("user", blind_index("42", kind="user")),
        ]
        assert entry.data == {"entitlement": "pro"}
        assert_no_pii(audit_table_texts(), ["alice@example.com"])


    def test_a_repeated_dedup_key_writes_nothing(self):
        first = audit_entry_append(action="entitlement.granted", dedup_key="grant:evt_1:pro", data={"n": 1})
        again = audit_entry_append(action="entitlement.granted", dedup_key="grant:evt_1:pro", data={"n": 2}, subjects={"user": "1"})
        assert first is not None and again is None
        assert AuditEntry.objects.count() == 1 and AuditSubject.objects.count() == 0
        assert used_head().last_seq == 1

    def test_the_unique_constraint_holds_when_the_fast_path_is_missed(self, monkeypatch):
        # Simulates a concurrent append whose row the fast-path read could not see yet.
        audit_entry_append(action="dlq.replayed", dedup_key="replay:7")
        monkeypatch.setattr("audit.services.AuditEntry.objects.filter", lambda **kw: AuditEntry.objects.none())
        assert audit_entry_append(action="dlq.replayed", dedup_key="replay:7") is None
        assert AuditEntry.objects.count() == 1
        assert audit_chain_verify()[0] == 1

    def test_a_dedup_key_holding_personal_data_is_stored_hashed(self):
        entry = audit_entry_append(action="notification.sent", dedup_key="mail:carol@example.com:receipt")
        assert entry.dedup_key.startswith("sha256:") and "carol" not in entry.dedup_key
        assert audit_entry_append(action="notification.sent", dedup_key="mail:carol@example.com:receipt") is None

    @pytest.mark.parametrize("action", ["webhook.deleted", "", "ENTITLEMENT.GRANTED"])
    def test_it_rejects_unknown_actions(self, action):
        with pytest.raises(UnknownAuditAction):
            audit_entry_append(action=action)
        assert not AuditEntry.objects.exists()

    @pytest.mark.parametrize("actor", ["alice@example.com", "admin", "0", "-1", ""])
    def test_it_rejects_actors_that_are_not_system_or_a_user_id(self, actor):
        with pytest.raises(InvalidAuditActor) as info:
            audit_entry_append(action="dlq.discarded", actor=actor)
        assert actor not in info.value.message or actor == ""

    def test_a_refused_entry_does_not_spoil_the_callers_transaction(self):
        from django.db import transaction

        with transaction.atomic():
            with pytest.raises(UnknownAuditAction):
                audit_entry_append(action="no.such.action")
            assert audit_entry_append(action="webhook.received").id == 1
        assert AuditEntry.objects.count() == 1

    def test_it_accepts_an_integer_user_id_as_actor(self):
        assert audit_entry_append(action="dlq.resolved", actor=7).actor == "7"

    def test_it_rejects_unknown_subject_kinds_and_malformed_event_ids(self):
        with pytest.raises(UnknownSubjectKind):
            audit_entry_append(action="webhook.received", subjects={"shoe_size": "44"})
        with pytest.raises(AuditError):
            audit_entry_append(action="webhook.received", event_id="not-a-uuid")
        assert not AuditEntry.objects.exists()

    def test_numbers_and_odd_values_survive_the_json_round_trip_with_a_valid_hash(self):
        audit_entry_append(
            action="webhook.received",
            data={"big": 1e20, "whole": 2.0, "neg_zero": -0.0, "tiny": 1.5e-7, "huge": 2**70, "text": "nul\x00 é 🎉", "nested": [[{"a": [1.25]}]]},
        )
        assert audit_chain_verify()[0] == 1

    def test_it_rolls_back_with_the_callers_transaction(self):
        from django.db import transaction

        audit_entry_append(action="webhook.received")
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                audit_entry_append(action="entitlement.granted")
                raise RuntimeError("effect failed")
        third = audit_entry_append(action="entitlement.revoked")
        # No gap in the chain: the rolled-back entry never took a place in its shard (its id is spent).
        assert (third.chain_seq, third.id) == (2, 3)
        assert audit_chain_verify()[0] == 2


def _append_in_thread(barrier, results, errors, **kwargs):
    try:
        barrier.wait(timeout=10)
        results.append(audit_entry_append(**kwargs))
    except Exception as exc:  # pragma: no cover - reported by the assertion below
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
class TestConcurrentAppends:
    def test_concurrent_workers_never_fork_the_chain(self):
        assert connection.vendor == "postgresql"
        barrier, results, errors = threading.Barrier(8), [], []
        threads = [
            threading.Thread(target=_append_in_thread, args=(barrier, results, errors), kwargs={"action": "webhook.received", "data": {"n": n}})
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors
        assert sorted(entry.id for entry in results) == list(range(1, 9))
        assert audit_chain_verify()[0] == 8

    def test_concurrent_appends_with_one_dedup_key_write_one_entry(self):
        audit_entry_append(action="webhook.received")  # the chain head exists: the race is on the key
        barrier, results, errors = threading.Barrier(6), [], []
        threads = [
            threading.Thread(target=_append_in_thread, args=(barrier, results, errors), kwargs={"action": "entitlement.granted", "dedup_key": "grant:evt_9:pro"})
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors
        assert sum(entry is not None for entry in results) == 1
        assert AuditEntry.objects.filter(dedup_key="grant:evt_9:pro").count() == 1
        assert audit_chain_verify()[0] == 2

    def test_the_first_appends_race_from_the_genesis_head(self):
        # Flushed by TRUNCATE, as every transactional test, then recreated at genesis by post_migrate.
        assert used_head_position() == (0, chain.GENESIS_HASH)
        barrier, results, errors = threading.Barrier(4), [], []
        threads = [
            threading.Thread(target=_append_in_thread, args=(barrier, results, errors), kwargs={"action": "webhook.received"})
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors
        assert audit_chain_verify()[0] == 4
