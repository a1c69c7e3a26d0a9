import itertools
import math
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from audit import chain
from audit.exceptions import AuditError, InvalidAuditActor, UnknownAuditAction, UnknownSubjectKind
from audit.models import AuditEntry, AuditSubject
from audit.selectors import audit_chain_verify
from audit.services import BULK_BATCH_SIZE, audit_entries_append, audit_entry_append
from tests.audit.conftest import used_head, used_head_position
from tests.audit.pii import assert_no_pii, audit_table_texts

EVENT = uuid.UUID("01a2f3c4-0000-7000-8000-000000000001")


def _entries_mixed() -> list[dict]:
    """Every kind of argument: subjects, personal data, personal and long dedup keys, repeats."""
    return [
        {"action": "webhook.received", "event_id": EVENT, "data": {"type": "invoice.paid", "amount": 2000}},
        {
            "action": "entitlement.granted",
            "actor": 42,
            "event_id": str(EVENT),
            "data": {"entitlement_key": "pro", "note": "for Dana@Example.com, call +44 20 7946 0958", "big": 1e20},
            "subjects": {"email": "dana@example.com", "customer": "cus_9", "user": "42", "charge": ""},
            "dedup_key": "grant:evt_1:pro",
        },
        {"action": "entitlement.granted", "data": {"n": 2}, "dedup_key": "grant:evt_1:pro"},  # repeat: skipped
        {"action": "notification.sent", "dedup_key": "mail:dana@example.com:receipt", "subjects": {"notification": "n_1"}},
        {"action": "notification.sent", "dedup_key": "mail:dana@example.com:receipt"},  # repeat, hashed: skipped
        {"action": "dlq.replayed", "actor": "7", "dedup_key": "x" * 300, "data": {"dead_letter": 1, "task": "a.b"}},
        {"action": "dlq.discarded", "dedup_key": "already:written"},  # written before the batch: skipped
        {"action": "event.reprocessed", "data": {"previous_status": "processed", "via": "admin"}},
        {"action": "event.reprocessed", "data": {"previous_status": "processed", "via": "admin"}},  # no key: both kept
    ]


@pytest.fixture
def clock(monkeypatch):
    """A deterministic `timezone.now()` for the audit app: one microsecond further per call."""

    def restart():
        ticks = itertools.count()
        start = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        monkeypatch.setattr("audit.services.timezone", SimpleNamespace(now=lambda: start + timedelta(microseconds=next(ticks))))

    restart()
    return restart


def _log_snapshot() -> dict:
    return {
        "entries": list(
            AuditEntry.objects.order_by("id").values_list(
                "id", "action", "occurred_at", "actor", "event_id", "data", "dedup_key", "prev_hash", "entry_hash"
            )
        ),
        "subjects": list(AuditSubject.objects.order_by("id").values_list("entry_id", "kind", "value_hash")),
        "head": used_head_position(),
    }


class _Rollback(Exception):
    pass


def _written_then_rolled_back(write) -> dict:
    """What `write()` leaves in the log, seen before rolling it back: each run starts from the same chain."""
    snapshot = {}
    with connection.cursor() as cursor:  # ids come from a sequence, which a rollback does not reset
        cursor.execute("SELECT setval('audit_auditentry_id_seq', (SELECT MAX(id) FROM audit_auditentry))")
    with pytest.raises(_Rollback):
        with transaction.atomic():
            write()
            snapshot.update(_log_snapshot(), verified=audit_chain_verify()[1:])
            raise _Rollback
    return snapshot


@pytest.mark.django_db
class TestAuditEntriesAppend:
    def test_it_writes_the_same_rows_and_hashes_as_one_append_per_entry(self, clock):
        audit_entry_append(action="webhook.received", data={"first": True})
        audit_entry_append(action="dlq.discarded", dedup_key="already:written")
        before = _log_snapshot()

        def one_by_one():
            clock()
            for entry in _entries_mixed():
                audit_entry_append(**entry)

        def in_bulk():
            clock()
            audit_entries_append(entries=_entries_mixed())

        single, bulk = _written_then_rolled_back(one_by_one), _written_then_rolled_back(in_bulk)

        assert _log_snapshot() == before
        assert bulk["entries"] == single["entries"]
        assert bulk["subjects"] == single["subjects"]
        assert bulk["head"] == single["head"] == (8, single["entries"][-1][-1])
        assert bulk["verified"] == single["verified"] == single["head"]
        assert [row[0] for row in bulk["entries"]] == list(range(1, 9))
        assert len(bulk["subjects"]) == 4  # the empty charge subject is not stored, as one by one

    def test_it_returns_the_written_entries_in_chain_order(self):
        first = audit_entry_append(action="webhook.received")
        written = audit_entries_append(entries=_entries_mixed())
        assert [entry.id for entry in written] == list(range(2, 9))
        assert written[0].prev_hash == first.entry_hash
        assert all(later.prev_hash == earlier.entry_hash for earlier, later in itertools.pairwise(written))
        assert all(not entry._state.adding for entry in written)
        assert written[1].subjects.count() == 3
        assert_no_pii(audit_table_texts(), ["dana@example.com", "+44 20 7946 0958"])

    def test_an_entry_whose_dedup_key_was_written_or_comes_earlier_in_the_batch_is_skipped(self):
        audit_entry_append(action="dlq.replayed", dedup_key="replay:1:1")
        written = audit_entries_append(
            entries=[
                {"action": "dlq.replayed", "dedup_key": "replay:1:1", "subjects": {"dead_letter": "1"}},
                {"action": "dlq.replayed", "dedup_key": "replay:2:1", "data": {"dead_letter": 1}},
                {"action": "dlq.replayed", "dedup_key": "replay:2:1", "data": {"dead_letter": 2}, "subjects": {"dead_letter": "2"}},
                {"action": "dlq.replayed", "dedup_key": "replay:3:1"},
            ]
        )
        assert [(entry.id, entry.dedup_key, entry.data) for entry in written] == [(2, "replay:2:1", {"dead_letter": 1}), (3, "replay:3:1", {})]
        assert AuditEntry.objects.count() == 3 and not AuditSubject.objects.exists()
        assert audit_chain_verify()[0] == 3

    def test_a_batch_of_repeats_only_writes_nothing_and_leaves_the_head(self):
        first = audit_entry_append(action="dlq.resolved", dedup_key="resolve:1")
        assert audit_entries_append(entries=[{"action": "dlq.resolved", "dedup_key": "resolve:1"}] * 3) == []
        assert used_head_position() == (1, first.entry_hash)

    def test_an_empty_batch_touches_nothing(self, django_assert_num_queries):
        with django_assert_num_queries(0):
            assert audit_entries_append(entries=[]) == []

    def test_the_first_append_ever_starts_at_genesis(self):
        written = audit_entries_append(entries=[{"action": "webhook.received"}, {"action": "event.ignored"}])
        assert written[0].prev_hash == chain.GENESIS_HASH
        assert audit_chain_verify() == (2, 2, written[-1].entry_hash)

    @pytest.mark.parametrize(
        ("bad", "error"),
        [
            ({"action": "webhook.deleted"}, UnknownAuditAction),
            ({"action": "dlq.replayed", "actor": "admin"}, InvalidAuditActor),
            ({"action": "dlq.replayed", "event_id": "not-a-uuid"}, AuditError),
            ({"action": "dlq.replayed", "subjects": {"shoe_size": "44"}}, UnknownSubjectKind),
            ({"action": "dlq.replayed", "colour": "red"}, TypeError),
        ],
    )
    def test_one_refused_entry_writes_nothing_and_does_not_spoil_the_callers_transaction(self, bad, error, django_assert_num_queries):
        before = audit_entry_append(action="webhook.received")
        entries = [{"action": "dlq.replayed", "dedup_key": f"replay:{n}"} for n in range(5)]
        with transaction.atomic():
            with django_assert_num_queries(0), pytest.raises(error):
                audit_entries_append(entries=[*entries, bad, *entries])
            assert [entry.id for entry in audit_entries_append(entries=entries)] == [2, 3, 4, 5, 6]
        assert AuditEntry.objects.count() == 6
        assert used_head().last_seq == 6 and audit_chain_verify()[0] == 6
        assert before.id == 1

    def test_it_rolls_back_with_the_callers_transaction(self):
        audit_entry_append(action="webhook.received")
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                audit_entries_append(entries=[{"action": "dlq.replayed", "dedup_key": "replay:9"}] * 2)
                raise RuntimeError("effect failed")
        again = audit_entries_append(entries=[{"action": "dlq.replayed", "dedup_key": "replay:9"}])[0]
        # No gap in the chain: the rolled-back entry never took a place in its shard (its id is spent).
        assert (again.chain_seq, again.id) == (2, 4)
        assert audit_chain_verify()[0] == 2

    def test_single_and_bulk_appends_interleaved_keep_one_valid_chain(self):
        audit_entry_append(action="webhook.received", subjects={"email": "erin@example.com"})
        audit_entries_append(entries=[{"action": "dlq.replayed", "dedup_key": f"r:{n}", "subjects": {"dead_letter": str(n)}} for n in range(3)])
        assert audit_entry_append(action="dlq.replayed", dedup_key="r:1") is None
        audit_entry_append(action="dlq.replayed", dedup_key="r:3")
        audit_entries_append(entries=[{"action": "dlq.replayed", "dedup_key": f"r:{n}"} for n in range(6)])
        audit_entry_append(action="entitlement.granted", actor=3)
        assert list(AuditEntry.objects.order_by("id").values_list("chain_seq", flat=True)) == list(range(1, 9))
        assert audit_chain_verify()[0] == 8

    def test_the_statement_count_does_not_grow_with_the_batch(self):
        audit_entry_append(action="webhook.received")  # the head exists: every batch below locks it alike

        def statements(count: int, prefix: str) -> int:
            entries = [
                {"action": "dlq.replayed", "actor": "5", "event_id": uuid.uuid4(), "data": {"dead_letter": n, "task": "t"},
                 "subjects": {"dead_letter": str(n), "customer": f"cus_{n}"}, "dedup_key": f"{prefix}:{n}"}
                for n in range(count)
            ]
            with CaptureQueriesContext(connection) as captured:
                assert len(audit_entries_append(entries=entries)) == count
            return len(captured.captured_queries)

        def inserts(rows: int, columns: int) -> int:
            # Django narrows a batch to SQLite's parameter limit; on PostgreSQL it stays BULK_BATCH_SIZE.
            per_insert = min(BULK_BATCH_SIZE, connection.ops.bulk_batch_size(range(columns), range(BULK_BATCH_SIZE)))
            return math.ceil(rows / per_insert)

        # Lock a shard head (and take the ids), read the keys, move the head; and the INSERTs: entries
        # go BULK_BATCH_SIZE rows per statement, and each has two subjects of 3 columns. PostgreSQL adds
        # a savepoint (a concurrent appender in another shard may write one of the keys) and sends the
        # last subjects' INSERT with the head's move, as one statement.
        postgresql = connection.vendor == "postgresql"
        for count in (1, BULK_BATCH_SIZE // 2, 3 * BULK_BATCH_SIZE):
            expected = 3 + math.ceil(count / BULK_BATCH_SIZE) + inserts(2 * count, 3)
            assert statements(count, f"n{count}") == expected  # on PostgreSQL: +1 savepoint, -1 merged INSERT
        if postgresql:
            assert statements(1, "one") == statements(BULK_BATCH_SIZE // 2, "half") == 5
        assert audit_chain_verify()[0] == AuditEntry.objects.count()


def _head_move(last_seq: int, last_hash: str) -> None:
    """Move the head of the shard the test appended to (the only one with entries)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditchainhead SET last_seq = %s, last_hash = %s WHERE id = %s", [last_seq, last_hash, used_head().id])


def _entry_insert_raw(seq: int, prev_hash: str, entry_hash: str) -> None:
    """An entry at position `seq` of that shard (id = seq, as the test's appends from id 1 are)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditentry (id, chain_shard, chain_seq, action, occurred_at, actor, data, prev_hash, entry_hash) "
            "VALUES (%s, %s, %s, 'webhook.received', %s, 'system', '{}', %s, %s)",
            [seq, used_head().id, seq, datetime.now(UTC), prev_hash, entry_hash],
        )


@pytest.mark.django_db
class TestTheChainHeadMovesOnlyAlongTheChain:
    """Migrations 0003/0006: a shard head may jump forward over many entries, only along intact links."""

    @pytest.fixture
    def head(self, db):
        audit_entries_append(entries=[{"action": "webhook.received", "data": {"n": n}} for n in range(3)])
        return used_head()

    def test_it_refuses_to_move_back_sideways_or_to_a_forged_hash(self, head):
        first = AuditEntry.objects.get(pk=1)
        with pytest.raises(DatabaseError, match="advance"):
            _head_move(1, first.entry_hash)
        with pytest.raises(DatabaseError, match="advance"):
            _head_move(3, head.last_hash)  # the same place: not an advance
        with pytest.raises(DatabaseError, match="advance"):
            _head_move(4, "forged")

    def test_it_refuses_to_jump_over_a_gap_or_a_broken_link(self, head):
        _entry_insert_raw(5, "a" * 64, "b" * 64)  # entry 4 missing
        with pytest.raises(DatabaseError, match="advance"):
            _head_move(5, "b" * 64)
        _entry_insert_raw(4, head.last_hash, "c" * 64)  # 4 links to the head, 5 does not link to 4
        with pytest.raises(DatabaseError, match="advance"):
            _head_move(5, "b" * 64)
        _head_move(4, "c" * 64)  # the one intact step is still allowed
        assert used_head().last_seq == 4

    def test_it_refuses_a_next_entry_that_does_not_link_to_the_head(self, head):
        _entry_insert_raw(4, "d" * 64, "e" * 64)
        with pytest.raises(DatabaseError, match="advance"):
            _head_move(4, "e" * 64)

    def test_it_follows_raw_entries_that_link_up(self, head):
        _entry_insert_raw(4, head.last_hash, "f" * 64)
        _entry_insert_raw(5, "f" * 64, "9" * 64)
        _head_move(5, "9" * 64)
        assert used_head().last_seq == 5


def _in_thread(barrier, results, errors, append, **kwargs):
    try:
        barrier.wait(timeout=10)
        results.append(append(**kwargs))
    except Exception as exc:  # pragma: no cover - reported by the assertion below
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
class TestConcurrentBulkAppends:
    def test_bulk_and_single_appends_from_many_workers_never_fork_the_chain(self):
        assert connection.vendor == "postgresql"
        audit_entry_append(action="webhook.received")
        barrier, results, errors = threading.Barrier(8), [], []
        threads = []
        for n in range(8):
            if n % 2:
                kwargs = {"action": "dlq.replayed", "dedup_key": f"shared:{n % 3}"}
                threads.append(threading.Thread(target=_in_thread, args=(barrier, results, errors, audit_entry_append), kwargs=kwargs))
            else:
                # Every batch repeats the shared keys: each is written once, whichever worker wins.
                entries = [{"action": "dlq.replayed", "dedup_key": f"shared:{k}"} for k in range(3)]
                entries += [{"action": "dlq.replayed", "dedup_key": f"own:{n}:{k}", "subjects": {"dead_letter": str(k)}} for k in range(50)]
                threads.append(threading.Thread(target=_in_thread, args=(barrier, results, errors, audit_entries_append), kwargs={"entries": entries}))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert AuditEntry.objects.count() == 1 + 3 + 4 * 50
        assert audit_chain_verify()[0] == 1 + 3 + 4 * 50


@pytest.mark.slow
@pytest.mark.django_db
def test_appending_10000_entries_in_one_batch(capsys):
    audit_entry_append(action="webhook.received")
    entries = [
        {"action": "dlq.replayed", "actor": "5", "event_id": str(uuid.uuid4()),
         "data": {"dead_letter": n, "task": "webhooks.tasks.webhook_events_process"}, "dedup_key": f"dlq.replayed:{n}:1"}
        for n in range(10_000)
    ]
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        written = audit_entries_append(entries=entries)
    elapsed = time.perf_counter() - started

    single_entries = [{**entry, "dedup_key": f"single:{n}"} for n, entry in enumerate(entries[:500])]
    started = time.perf_counter()
    for entry in single_entries:
        audit_entry_append(**entry)
    single_elapsed = time.perf_counter() - started

    assert len(written) == 10_000
    verify_started = time.perf_counter()
    assert audit_chain_verify()[0] == 10_501
    verify_elapsed = time.perf_counter() - verify_started
    with capsys.disabled():
        print(
            f"\naudit_entries_append of 10,000 entries: {elapsed:.2f} s, {len(captured.captured_queries)} statements"
            f" (audit_entry_append one by one: {single_elapsed / 500 * 10_000:.1f} s per 10,000, from 500;"
            f" audit_chain_verify of 10,501: {verify_elapsed:.2f} s)"
        )
