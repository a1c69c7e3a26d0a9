"""Tampering by someone who can write the audit tables: without AUDIT_CHAIN_KEY the chain cannot be
recomputed; with it, a rewrite is still caught against a head published earlier (--expect-head)."""

import hashlib
import hmac
import logging

import pytest
from django.conf import settings
from django.core.management import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import chain
from audit.exceptions import AuditChainBroken, UnknownAuditAction
from audit.models import AuditChainAnchor, AuditChainHead, AuditEntry
from audit.selectors import _expected_head_check
from audit.services import audit_entries_append, audit_entry_append
from audit.tasks import audit_chain_head_publish
from tests.audit.conftest import used_head
from tests.audit.test_verify_audit_chain import _tamper, _verify


def _sha256(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def _hmac_under(key: str):
    return lambda prev_hash, content: hmac.new(key.encode(), (prev_hash + content).encode(), hashlib.sha256).hexdigest()


def _rechain(*, from_id: int, hasher, head: bool = True) -> None:
    """Recompute prev_hash and entry_hash from `from_id` on with `hasher`, and move the head: what an
    attacker with write access does after changing an entry."""
    prev = AuditEntry.objects.filter(pk=from_id - 1).values_list("entry_hash", flat=True).first() or chain.GENESIS_HASH
    last_id = from_id - 1
    for entry in AuditEntry.objects.order_by("id").filter(id__gte=from_id).prefetch_related("subjects"):
        content = chain.entry_content(
            id=entry.id, action=entry.action, occurred_at=entry.occurred_at, actor=entry.actor,
            event_id=entry.event_id, data=entry.data, dedup_key=entry.dedup_key,
            subjects=[(s.kind, s.value_hash) for s in entry.subjects.all()],
        )
        new_hash = hasher(prev, content)
        _tamper("UPDATE audit_auditentry SET prev_hash = %s, entry_hash = %s WHERE id = %s", [prev, new_hash, entry.id])
        prev, last_id = new_hash, entry.id
    if head:  # these tests append to one shard, from id 1: seq = id
        _tamper("UPDATE audit_auditchainhead SET last_seq = %s, last_hash = %s WHERE id = %s", [last_id, prev, _shard()])


def _shard() -> int:
    return AuditEntry.objects.values_list("chain_shard", flat=True).get(pk=1)


@pytest.fixture
def chain_of_five(db):
    audit_entries_append(entries=[
        {"action": "entitlement.granted", "actor": str(n + 1), "data": {"entitlement_key": "pro", "n": n},
         "subjects": {"email": f"user{n}@example.com"}}
        for n in range(5)
    ])
    return {entry.id: entry.entry_hash for entry in AuditEntry.objects.all()}


@pytest.mark.django_db
class TestKeyedChain:
    def test_entry_hashes_are_hmacs_under_the_chain_key_not_plain_sha256(self, chain_of_five):
        entry = AuditEntry.objects.prefetch_related("subjects").get(pk=1)
        content = chain.entry_content(
            id=1, action=entry.action, occurred_at=entry.occurred_at, actor=entry.actor, event_id=entry.event_id,
            data=entry.data, dedup_key=entry.dedup_key, subjects=[(s.kind, s.value_hash) for s in entry.subjects.all()],
        )
        assert entry.entry_hash == _hmac_under(settings.AUDIT_CHAIN_KEY)(chain.GENESIS_HASH, content)
        assert entry.entry_hash != _sha256(chain.GENESIS_HASH, content)

    def test_under_another_key_the_chain_does_not_verify(self, chain_of_five, settings):
        settings.AUDIT_CHAIN_KEY = "some-other-key"
        with pytest.raises(CommandError, match=r"^audit entry 1: content does not match its hash"):
            _verify()

    def test_the_services_refuse_to_append_a_seal(self, chain_of_five):
        with pytest.raises(UnknownAuditAction):
            audit_entry_append(action=chain.CHAIN_KEYED_ACTION)
        assert _verify().startswith("OK 5 entries")

    def test_an_empty_key_is_refused_rather_than_used(self, chain_of_five, settings):
        settings.AUDIT_CHAIN_KEY = ""
        with pytest.raises(ValueError, match="AUDIT_CHAIN_KEY is empty"):
            audit_entry_append(action="webhook.received")

    def test_a_rewrite_with_plain_sha256_recomputed_is_detected(self, chain_of_five):
        _tamper("UPDATE audit_auditentry SET data = '{\"entitlement_key\": \"enterprise\", \"n\": 2}' WHERE id = 3")
        _rechain(from_id=3, hasher=_sha256)
        with pytest.raises(CommandError, match=r"^audit entry 3: content does not match its hash"):
            _verify()

    def test_a_rewrite_under_a_guessed_key_is_detected(self, chain_of_five):
        _tamper("UPDATE audit_auditentry SET actor = '999' WHERE id = 2")
        _rechain(from_id=2, hasher=_hmac_under("guessed-key"))
        with pytest.raises(CommandError, match=r"^audit entry 2: content does not match its hash"):
            _verify()

    def test_a_rewrite_of_the_whole_log_as_plain_sha256_is_detected(self, chain_of_five):
        # No seal entry, so the log must be keyed from entry 1: an all-unkeyed log is not accepted.
        _rechain(from_id=1, hasher=_sha256)
        with pytest.raises(CommandError, match=r"^audit entry 1: content does not match its hash"):
            _verify()

    def test_a_forged_seal_does_not_make_the_prefix_unkeyed(self, chain_of_five):
        # Relabel entry 5 as the seal so 1-4 would be checked as plain SHA-256: the seal itself is keyed.
        _tamper("UPDATE audit_auditentry SET action = %s WHERE id = 5", [chain.CHAIN_KEYED_ACTION])
        _rechain(from_id=1, hasher=_sha256)
        with pytest.raises(CommandError, match=r"^audit entry 5: content does not match its hash"):
            _verify()

    def test_a_hash_replaced_by_arbitrary_text_is_a_one_line_failure(self, chain_of_five):
        _tamper("UPDATE audit_auditentry SET entry_hash = %s WHERE id = 2", ["é" * 10])
        with pytest.raises(CommandError, match=r"^audit entry 2: content does not match its hash"):
            _verify()


@pytest.mark.django_db
class TestTruncatedOrCutShort:
    def test_a_missing_head_fails(self, chain_of_five):
        _tamper("DELETE FROM audit_auditchainhead")
        with pytest.raises(CommandError, match=r"^audit chain head: the head row is missing"):
            _verify()

    def test_an_emptied_log_with_no_head_fails_rather_than_counting_as_new(self, chain_of_five):
        _tamper("DELETE FROM audit_auditsubject")
        _tamper("DELETE FROM audit_auditentry")
        _tamper("DELETE FROM audit_auditchainhead")
        with pytest.raises(CommandError, match="head row is missing"):
            _verify()

    def test_an_emptied_log_under_its_head_fails(self, chain_of_five):
        _tamper("DELETE FROM audit_auditsubject")
        _tamper("DELETE FROM audit_auditentry")
        with pytest.raises(CommandError, match=r"^audit chain shard \d+: entries after #0 were removed"):
            _verify()

    def test_appends_refuse_to_start_a_new_chain_without_the_head(self, chain_of_five):
        _tamper("DELETE FROM audit_auditchainhead")
        with pytest.raises(AuditChainBroken, match="head row is missing"):
            audit_entry_append(action="webhook.received")

    def test_the_last_entries_deleted_under_the_head_are_detected(self, chain_of_five):
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id > 3")
        _tamper("DELETE FROM audit_auditentry WHERE id > 3")
        with pytest.raises(CommandError, match=r"^audit chain shard \d+: entries after #3 were removed"):
            _verify()

    def test_the_last_entries_deleted_and_the_head_fixed_with_plain_sha256_are_detected(self, chain_of_five):
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id > 3")
        _tamper("DELETE FROM audit_auditentry WHERE id > 3")
        _tamper("UPDATE audit_auditentry SET data = '{}' WHERE id = 3")
        _rechain(from_id=3, hasher=_sha256)
        with pytest.raises(CommandError, match=r"^audit entry 3: content does not match"):
            _verify()

    def test_the_last_entries_deleted_and_the_head_rewound_are_caught_by_the_published_head(self, chain_of_five):
        published = f"5:{chain_of_five[5]}"
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id > 3")
        _tamper("DELETE FROM audit_auditentry WHERE id > 3")
        _tamper("UPDATE audit_auditchainhead SET last_seq = 3, last_hash = %s WHERE id = %s", [chain_of_five[3], _shard()])
        # A consistent shorter log: only a head published earlier can tell.
        assert _verify().splitlines()[-1] == f"OK 3 entries, head 3:{chain_of_five[3]}"
        with pytest.raises(CommandError, match=r"^audit entry 5: the expected head is no longer in the log \(cut short\)$"):
            _verify(expect_head=published)

    def test_truncate_is_refused_by_postgresql_for_a_role_that_may_truncate(self, chain_of_five):
        # The test connects as a superuser, whom the trigger lets through (the suite's flush);
        # any other role, even one granted TRUNCATE (e.g. a non-superuser schema owner), is refused.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # else: "pending trigger events", not the trigger
            cursor.execute("CREATE ROLE audit_truncate_probe NOLOGIN")  # rolled back with the test
            cursor.execute("GRANT TRUNCATE ON audit_auditentry, audit_auditsubject, audit_auditchainhead TO audit_truncate_probe")
        for sql in (
            "TRUNCATE audit_auditentry, audit_auditsubject, audit_auditchainhead",
            "TRUNCATE audit_auditsubject",
            "TRUNCATE audit_auditchainhead",
        ):
            with pytest.raises(DatabaseError, match="append-only: TRUNCATE"):
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("SET LOCAL ROLE audit_truncate_probe")
                    cursor.execute(sql)
        assert AuditEntry.objects.count() == 5 and used_head().last_seq == 5


@pytest.mark.django_db
class TestExpectHead:
    def test_the_published_head_holding_passes_with_the_ok_line_last(self, chain_of_five):
        audit_entry_append(action="webhook.received")
        head = used_head()
        out = _verify(expect_head=f"3:{chain_of_five[3]}")
        assert out.splitlines()[-1] == f"OK 6 entries, head 6:{head.last_hash}"

    def test_a_rewrite_before_the_published_head_by_someone_holding_the_key_is_caught(self, chain_of_five):
        # Entries after 2 rewritten and rehashed under the real key: the chain itself verifies...
        _tamper("UPDATE audit_auditentry SET data = '{\"entitlement_key\": \"enterprise\", \"n\": 3}' WHERE id = 4")
        _rechain(from_id=3, hasher=_hmac_under(settings.AUDIT_CHAIN_KEY))
        assert _verify().startswith("OK 5 entries")
        # ...but not against the head published before the rewrite.
        with pytest.raises(CommandError, match=r"^audit entry 5: its hash differs from the expected head \(rewritten\)$"):
            _verify(expect_head=f"5:{chain_of_five[5]}")

    def test_a_rewrite_after_entry_k_under_a_guessed_key_no_longer_matches_the_published_head(self, chain_of_five):
        _tamper("UPDATE audit_auditentry SET actor = '77' WHERE id = 3")
        _rechain(from_id=3, hasher=_hmac_under("guessed-key"))
        with pytest.raises(CommandError, match=r"^audit entry 3: content does not match"):
            _verify(expect_head=f"4:{chain_of_five[4]}")
        # The published head no longer matches either (the check --expect-head adds to the walk).
        with pytest.raises(AuditChainBroken, match=r"^audit entry 4: its hash differs from the expected head"):
            _expected_head_check((4, chain_of_five[4]))

    @pytest.mark.parametrize("value", ["5", "x:abc", f"-1:{'a' * 64}", f"5:{'a' * 63}", f"5:{'g' * 64}", f"5:{'a' * 64}:1", ""])
    def test_a_malformed_expected_head_is_a_one_line_error(self, chain_of_five, value):
        with pytest.raises(CommandError) as raised:
            _verify(expect_head=value)
        assert str(raised.value) == "--expect-head must be ID:HASH (an entry id and its 64-hex-digit hash)"

    def test_an_expected_head_past_the_end_is_cut_short(self, chain_of_five):
        with pytest.raises(CommandError, match=r"^audit entry 9: the expected head is no longer in the log"):
            _verify(expect_head=f"9:{'a' * 64}")


def _legacy_log(n: int) -> dict[int, str]:
    """A log as written before the chain was keyed: plain SHA-256 links, head on the last one."""
    prev = chain.GENESIS_HASH
    hashes = {}
    for entry_id in range(1, n + 1):
        occurred_at = timezone.now()
        data = {"n": entry_id}
        content = chain.entry_content(id=entry_id, action="webhook.received", occurred_at=occurred_at, actor="system",
                                      event_id=None, data=data, dedup_key=None, subjects=[])
        entry_hash = _sha256(prev, content)
        # All of a log from before the sharding is shard 1's history, chain_seq = id (migration 0006).
        AuditEntry.objects.create(id=entry_id, chain_shard=1, chain_seq=entry_id, action="webhook.received",
                                  occurred_at=occurred_at, data=data, prev_hash=prev, entry_hash=entry_hash)
        AuditChainHead.objects.filter(pk=1).update(last_seq=entry_id, last_hash=entry_hash)
        prev, hashes[entry_id] = entry_hash, entry_hash
    return hashes


@pytest.mark.django_db
class TestSealOfAnUnkeyedLog:
    """Migration 0004 sealed a log written before the chain was keyed with one keyed entry; since
    migration 0006 such a log is shard 1's history. 0004's own function runs against the schema of its
    time (`last_id`), so the seal is written here as it wrote it, in shard 1."""

    def _seal(self):
        head = AuditChainHead.objects.get(pk=1)
        data = {"scheme": "hmac-sha256", "unkeyed_through": head.last_seq}
        entry = AuditEntry(
            id=head.last_seq + 1, chain_shard=1, chain_seq=head.last_seq + 1, action=chain.CHAIN_KEYED_ACTION,
            occurred_at=timezone.now(), actor="system", event_id=None, data=data, dedup_key=chain.CHAIN_KEYED_ACTION,
            prev_hash=head.last_hash,
        )
        content = chain.entry_content(id=entry.id, action=entry.action, occurred_at=entry.occurred_at, actor="system",
                                      event_id=None, data=data, dedup_key=entry.dedup_key, subjects=[])
        entry.entry_hash = chain.entry_hash(head.last_hash, content)
        entry.save(force_insert=True)
        AuditChainHead.objects.filter(pk=1).update(last_seq=entry.id, last_hash=entry.entry_hash)
        with connection.cursor() as cursor:  # as migration 0006 leaves it: ids after the history
            cursor.execute("SELECT setval('audit_auditentry_id_seq', %s)", [entry.id])

    def test_the_sealed_log_verifies_and_appends_continue_keyed(self):
        _legacy_log(3)
        self._seal()
        seal = AuditEntry.objects.get(pk=4)
        assert seal.action == chain.CHAIN_KEYED_ACTION and seal.data == {"scheme": "hmac-sha256", "unkeyed_through": 3}
        audit_entry_append(action="webhook.received")
        assert _verify().startswith("OK 5 entries, head 5:")

    def test_a_second_seal_is_refused(self):
        _legacy_log(2)
        self._seal()
        with pytest.raises(Exception):  # the seal's dedup key is unique: one seal per log
            with transaction.atomic():
                self._seal()
        assert AuditEntry.objects.filter(action=chain.CHAIN_KEYED_ACTION).count() == 1

    def test_a_rewrite_of_the_unkeyed_prefix_with_plain_sha256_breaks_the_seal(self):
        _legacy_log(3)
        self._seal()
        _tamper("UPDATE audit_auditentry SET data = '{\"n\": 99}' WHERE id = 2")
        _rechain(from_id=2, hasher=_sha256, head=False)  # 2 and 3 recomputed, and the seal's link
        with pytest.raises(CommandError, match=r"^audit entry 4: content does not match its hash"):
            _verify()

    def test_a_removed_seal_is_detected(self):
        hashes = _legacy_log(3)
        self._seal()
        _tamper("DELETE FROM audit_auditentry WHERE id = 4")
        _tamper("UPDATE audit_auditchainhead SET last_seq = 3, last_hash = %s WHERE id = 1", [hashes[3]])
        with pytest.raises(CommandError, match="content does not match its hash"):
            _verify()


@pytest.mark.django_db
class TestHeadPublishing:
    def test_the_task_logs_the_head_id_hash_and_count_at_info(self, chain_of_five, caplog):
        with caplog.at_level(logging.INFO, logger="audit.tasks"):
            published = audit_chain_head_publish()
        anchor = AuditChainAnchor.objects.get()
        assert published == {"id": 5, "hash": chain_of_five[5], "count": 5, "anchor": f"1:{anchor.anchor_hash}"}
        assert anchor.heads[str(_shard())] == [5, chain_of_five[5]]
        assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "audit.tasks"] == [
            (logging.INFO, f"audit chain head id=5 hash={chain_of_five[5]} count=5 anchor=1:{anchor.anchor_hash}")
        ]

    def test_a_head_that_cannot_be_read_is_a_warning(self, chain_of_five, caplog):
        _tamper("DELETE FROM audit_auditchainhead")
        with caplog.at_level(logging.INFO, logger="audit.tasks"):
            assert audit_chain_head_publish() is None
        records = [r for r in caplog.records if r.name == "audit.tasks"]
        assert [r.levelno for r in records] == [logging.WARNING]
        assert records[0].getMessage() == "audit chain head unavailable: audit chain head: the head row is missing"

    def test_a_head_not_matching_its_entry_is_a_warning(self, chain_of_five, caplog):
        _tamper("UPDATE audit_auditentry SET entry_hash = %s WHERE id = 5", ["f" * 64])
        with caplog.at_level(logging.INFO, logger="audit.tasks"):
            assert audit_chain_head_publish() is None
        assert [r.levelno for r in caplog.records if r.name == "audit.tasks"] == [logging.WARNING]

    def test_beat_publishes_it_on_the_configured_interval(self):
        entry = settings.CELERY_BEAT_SCHEDULE["audit-chain-head-publish"]
        assert entry["task"] == audit_chain_head_publish.name == "audit.tasks.audit_chain_head_publish"
        assert entry["schedule"] == settings.AUDIT_HEAD_PUBLISH_INTERVAL_SECONDS == 300.0
