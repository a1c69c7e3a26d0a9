"""The sharded chain (migration 0006, issue 13): concurrent appends take different shards and never wait
on each other, a dedup key raced from two shards is written once without a hole, the shard heads are
anchored together, and a log from before the sharding still verifies after the migration."""

import threading
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from audit import chain, services
from audit.models import AuditChainAnchor, AuditChainHead, AuditEntry
from audit.selectors import audit_chain_verify
from audit.services import audit_chain_anchor_write, audit_entries_append, audit_entry_append
from tests.audit.test_verify_audit_chain import _tamper, _verify

# Generous: only reached when the behaviour under test is broken (a wait that never ends).
TIMEOUT = 20


def _in_shard(monkeypatch, shard: int):
    monkeypatch.setattr(services, "_preferred_shard", lambda: shard)


@pytest.fixture
def two_shards(db, monkeypatch):
    """Three entries in shard 2, then three in shard 5 (ids 1-3 and 4-6)."""
    _in_shard(monkeypatch, 2)
    audit_entries_append(entries=[{"action": "webhook.received", "data": {"n": n}} for n in range(3)])
    _in_shard(monkeypatch, 5)
    audit_entries_append(entries=[{"action": "entitlement.granted", "actor": "7", "data": {"entitlement_key": "pro", "n": n},
                                   "subjects": {"email": f"s5.{n}@example.com"}} for n in range(3)])
    return {entry.id: entry for entry in AuditEntry.objects.all()}


@pytest.mark.django_db
class TestShardedChain:
    def test_each_shard_is_its_own_gapless_chain_and_all_of_them_verify(self, two_shards):
        positions = {entry_id: (e.chain_shard, e.chain_seq) for entry_id, e in two_shards.items()}
        assert positions == {1: (2, 1), 2: (2, 2), 3: (2, 3), 4: (5, 1), 5: (5, 2), 6: (5, 3)}
        assert two_shards[4].prev_hash == chain.GENESIS_HASH and two_shards[5].prev_hash == two_shards[4].entry_hash
        heads = dict(AuditChainHead.objects.filter(last_seq__gt=0).values_list("id", "last_seq"))
        assert heads == {2: 3, 5: 3}
        assert _verify() == f"OK 6 entries, head 6:{two_shards[6].entry_hash}\n"

    def test_an_altered_entry_in_another_shard_fails_naming_it(self, two_shards):
        _tamper("UPDATE audit_auditentry SET actor = '8' WHERE id = 5")
        with pytest.raises(CommandError, match=r"^audit entry 5: content does not match its hash"):
            _verify()

    def test_entries_swapped_between_shards_fail(self, two_shards):
        # Entry 2 (shard 2 #2) and entry 5 (shard 5 #2) trade places; each now links to a stranger.
        _tamper("UPDATE audit_auditentry SET chain_seq = 99 WHERE id = 2")
        _tamper("UPDATE audit_auditentry SET chain_shard = 2, chain_seq = 2 WHERE id = 5")
        _tamper("UPDATE audit_auditentry SET chain_shard = 5, chain_seq = 2 WHERE id = 2")
        with pytest.raises(CommandError, match=r"^audit entry 5: prev_hash does not match the previous entry"):
            _verify()

    def test_a_deleted_entry_in_a_shard_fails_naming_the_one_after_it(self, two_shards):
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id = 5")
        _tamper("DELETE FROM audit_auditentry WHERE id = 5")
        with pytest.raises(CommandError, match=r"^audit entry 6: #2 of shard 5 is missing before it \(removed\)$"):
            _verify()

    def test_a_shard_cut_at_its_tail_with_its_head_rewound_fails_against_the_anchor(self, two_shards):
        audit_chain_anchor_write()  # the beat task (or a verify) anchored both heads
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id = 6")
        _tamper("DELETE FROM audit_auditentry WHERE id = 6")
        _tamper("UPDATE audit_auditchainhead SET last_seq = 2, last_hash = %s WHERE id = 5", [two_shards[5].entry_hash])
        with pytest.raises(CommandError, match=r"^audit chain shard 5: cut short at #2, below anchor 1 \(it names #3\)$"):
            _verify()

    def test_a_shard_whose_head_and_entries_are_all_gone_fails_against_the_anchor(self, two_shards):
        audit_chain_anchor_write()
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id > 3")
        _tamper("DELETE FROM audit_auditentry WHERE chain_shard = 5")
        _tamper("DELETE FROM audit_auditchainhead WHERE id = 5")
        with pytest.raises(CommandError, match=r"^audit chain shard 5: its head is gone \(anchor 1 names #3\)$"):
            _verify()

    def test_a_shard_rewritten_below_the_anchor_fails(self, two_shards):
        audit_chain_anchor_write()
        _tamper("UPDATE audit_auditentry SET entry_hash = %s WHERE id = 6", ["a" * 64])
        _tamper("UPDATE audit_auditchainhead SET last_hash = %s WHERE id = 5", ["a" * 64])
        with pytest.raises(CommandError, match=r"^audit entry 6: content does not match its hash"):
            _verify()

    def test_an_altered_or_missing_anchor_fails(self, two_shards):
        first = audit_chain_anchor_write()
        audit_entry_append(action="webhook.received")
        audit_chain_anchor_write()
        _tamper("UPDATE audit_auditchainanchor SET heads = jsonb_set(heads, '{5,0}', '2') WHERE id = 1")
        with pytest.raises(CommandError, match=r"^audit chain anchor 1: content does not match its hash \(altered\)$"):
            _verify()
        _tamper("DELETE FROM audit_auditchainanchor WHERE id = 1")
        with pytest.raises(CommandError, match=r"^audit chain anchor 2: anchor 1 is missing or was altered before it$"):
            _verify()
        assert first.id == 1

    def test_every_successful_verify_anchors_all_heads(self, two_shards):
        _verify()
        anchor = AuditChainAnchor.objects.get()
        assert {shard: seq for shard, (seq, _) in anchor.heads.items() if seq} == {"2": 3, "5": 3}
        assert len(anchor.heads) == AuditChainHead.objects.count()

    def test_the_expected_head_may_be_any_entry_of_any_shard(self, two_shards):
        for entry in two_shards.values():
            assert _verify(expect_head=f"{entry.id}:{entry.entry_hash}").startswith("OK 6 entries")
        _tamper("UPDATE audit_auditentry SET entry_hash = %s WHERE id = 3", ["b" * 64])
        with pytest.raises(CommandError, match=r"^audit entry 3: content does not match its hash"):
            _verify(expect_head=f"3:{two_shards[3].entry_hash}")


@pytest.mark.django_db
class TestShardHeads:
    def test_migrate_creates_the_configured_number_of_heads_at_genesis(self):
        heads = list(AuditChainHead.objects.order_by("id").values_list("id", "last_seq", "last_hash"))
        assert heads == [(n, 0, chain.GENESIS_HASH) for n in range(1, 17)]

    def test_a_raised_setting_adds_heads_and_a_lowered_one_removes_none(self, settings):
        settings.AUDIT_CHAIN_SHARDS = 20
        assert services.audit_chain_head_ensure() is True
        assert AuditChainHead.objects.count() == 20
        settings.AUDIT_CHAIN_SHARDS = 4
        assert services.audit_chain_head_ensure() is False
        assert AuditChainHead.objects.count() == 20

    def test_no_head_is_created_for_a_log_whose_heads_were_removed(self, two_shards):
        _tamper("DELETE FROM audit_auditchainhead")
        assert services.audit_chain_head_ensure() is False
        assert not AuditChainHead.objects.exists()


def _append_holding(shard_seen: dict, name: str, appended: threading.Event, release: threading.Event, **entry):
    """Append in a transaction and keep it open until `release`: the shard head stays locked meanwhile."""
    try:
        with transaction.atomic():
            shard_seen[name] = audit_entry_append(**entry).chain_shard
            appended.set()
            release.wait(TIMEOUT)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
class TestConcurrentAppends:
    def test_an_append_does_not_wait_for_another_transaction_holding_a_shard(self):
        assert connection.vendor == "postgresql"
        shards, appended, release = {}, threading.Event(), threading.Event()
        holder = threading.Thread(target=_append_holding, args=(shards, "holder", appended, release),
                                  kwargs={"action": "webhook.received"})
        holder.start()
        try:
            assert appended.wait(TIMEOUT)
            # While the holder's transaction is open, another one appends and commits: with one global
            # head it would wait for the holder (which waits for `release`) and this would time out.
            finished = threading.Event()

            def other():
                try:
                    with transaction.atomic():
                        shards["other"] = audit_entry_append(action="entitlement.granted", actor="3").chain_shard
                    finished.set()
                finally:
                    connections.close_all()

            thread = threading.Thread(target=other)
            thread.start()
            assert finished.wait(TIMEOUT), "the second append waited for the first transaction"
            thread.join(TIMEOUT)
        finally:
            release.set()
            holder.join(TIMEOUT)
        assert shards["holder"] != shards["other"]
        assert audit_chain_verify()[0] == 2

    def test_many_threads_append_batches_to_several_shards_and_all_verify(self):
        barrier, errors = threading.Barrier(6), []

        def batch(n):
            try:
                barrier.wait(TIMEOUT)
                for round_ in range(5):
                    with transaction.atomic():
                        audit_entries_append(entries=[
                            {"action": "webhook.received", "dedup_key": f"t{n}:{round_}:{k}", "subjects": {"customer": f"cus_{n}"}}
                            for k in range(5)
                        ])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=batch, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 3)
        assert not errors
        assert AuditEntry.objects.count() == 6 * 5 * 5
        assert audit_chain_verify()[0] == 150
        # Every transaction's entries are consecutive in one shard.
        for key_prefix in ("t0:0:", "t3:4:"):
            rows = list(AuditEntry.objects.filter(dedup_key__startswith=key_prefix).values_list("chain_shard", "chain_seq"))
            assert len({shard for shard, _ in rows}) == 1
            assert sorted(seq for _, seq in rows) == list(range(min(s for _, s in rows), min(s for _, s in rows) + 5))

    def test_a_dedup_key_raced_from_two_shards_is_written_once_and_leaves_no_hole(self):
        shards, appended, release = {}, threading.Event(), threading.Event()
        holder = threading.Thread(target=_append_holding, args=(shards, "holder", appended, release),
                                  kwargs={"action": "dlq.replayed", "dedup_key": "replay:race"})
        holder.start()
        result, errors = {}, []

        def racer():
            try:
                with transaction.atomic():
                    result["written"] = audit_entries_append(entries=[
                        {"action": "dlq.replayed", "dedup_key": "replay:before"},
                        {"action": "dlq.replayed", "dedup_key": "replay:race"},
                        {"action": "dlq.replayed", "dedup_key": "replay:after"},
                    ])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connections.close_all()

        try:
            assert appended.wait(TIMEOUT)
            thread = threading.Thread(target=racer)
            thread.start()
            # The racer's INSERT waits on the holder's uncommitted key (a row lock wait): let the holder
            # commit only then, so the racer meets the conflict after chaining the key itself.
            with connections["default"].cursor() as cursor:
                for _ in range(TIMEOUT * 100):
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND datname = current_database()")
                    if cursor.fetchone()[0]:
                        break
                    threading.Event().wait(0.01)
                else:
                    pytest.fail("the racer never waited on the holder's key")
        finally:
            release.set()
            holder.join(TIMEOUT)
        thread.join(TIMEOUT)
        assert not errors
        assert [entry.dedup_key for entry in result["written"]] == ["replay:before", "replay:after"]
        assert [entry.chain_seq for entry in result["written"]] == [1, 2]
        assert AuditEntry.objects.filter(dedup_key="replay:race").count() == 1
        assert audit_chain_verify()[0] == 3


@pytest.mark.django_db(transaction=True)
def test_a_single_chain_log_from_before_the_sharding_verifies_after_the_migration():
    """Back to 0005, a log written as the single-chain code wrote it (raw SQL), forward to 0006."""
    executor = MigrationExecutor(connection)
    executor.migrate([("audit", "0005_subject_hash_entry_index")])
    prev, hashes = chain.GENESIS_HASH, {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_auditchainhead")
        assert cursor.fetchone()[0] >= 1
        for entry_id in range(1, 5):
            occurred_at = datetime.now(UTC)
            content = chain.entry_content(id=entry_id, action="webhook.received", occurred_at=occurred_at, actor="system",
                                          event_id=None, data={"n": entry_id}, dedup_key=f"old:{entry_id}", subjects=[])
            entry_hash = chain.entry_hash(prev, content)
            cursor.execute(
                "INSERT INTO audit_auditentry (id, action, occurred_at, actor, data, dedup_key, prev_hash, entry_hash) "
                "VALUES (%s, 'webhook.received', %s, 'system', %s, %s, %s, %s)",
                [entry_id, occurred_at, f'{{"n": {entry_id}}}', f"old:{entry_id}", prev, entry_hash],
            )
            cursor.execute("UPDATE audit_auditchainhead SET last_id = %s, last_hash = %s WHERE id = 1", [entry_id, entry_hash])
            prev, hashes[entry_id] = entry_hash, entry_hash
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert list(AuditEntry.objects.order_by("id").values_list("id", "chain_shard", "chain_seq")) == [(n, 1, n) for n in range(1, 5)]
    assert AuditChainHead.objects.values_list("last_seq", "last_hash").get(pk=1) == (4, hashes[4])
    assert _verify(expect_head=f"4:{hashes[4]}") == f"OK 4 entries, head 4:{hashes[4]}\n"
    # Appends continue after the history, with ids after its highest.
    assert audit_entry_append(action="webhook.received").id == 5
    assert _verify(expect_head=f"2:{hashes[2]}").startswith("OK 5 entries, head 5:")
    # The append-only trigger is back on after the migration's one UPDATE.
    with pytest.raises(Exception, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE audit_auditentry SET actor = '1' WHERE id = 1")
