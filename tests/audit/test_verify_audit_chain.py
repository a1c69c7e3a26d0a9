from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditEntry
from audit.services import audit_entry_append

AUDIT_TABLES = ("audit_auditentry", "audit_auditsubject", "audit_auditchainhead", "audit_auditchainanchor")


def _verify(**options) -> str:
    out = StringIO()
    call_command("verify_audit_chain", stdout=out, **options)
    return out.getvalue()


def _tamper(sql: str, params=()):
    """Run `sql` with the append-only triggers disabled, as an attacker with table rights could."""
    with connection.cursor() as cursor:
        # The test's own transaction holds deferred foreign-key checks, which ALTER TABLE refuses.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in AUDIT_TABLES:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        for table in AUDIT_TABLES:
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


@pytest.fixture
def chain_of_five(db):
    for n in range(5):
        audit_entry_append(
            action="entitlement.granted", actor=str(n + 1), data={"entitlement_key": "pro", "n": n},
            subjects={"email": f"user{n}@example.com"},
        )


@pytest.mark.django_db
class TestVerifyAuditChain:
    def test_an_intact_chain_prints_one_ok_line_with_the_count(self, chain_of_five):
        output = _verify()
        last = AuditEntry.objects.get(pk=5).entry_hash
        assert output == f"OK 5 entries, head 5:{last}\n"

    def test_a_log_never_written_is_ok_at_the_genesis_head(self):
        assert _verify() == f"OK 0 entries, head 0:{'0' * 64}\n"

    def test_an_altered_entry_fails_naming_it(self, chain_of_five):
        _tamper("UPDATE audit_auditentry SET data = '{\"entitlement_key\": \"enterprise\", \"n\": 2}' WHERE id = 3")
        with pytest.raises(CommandError, match=r"^audit entry 3: content does not match its hash \(altered, or another AUDIT_CHAIN_KEY\)$"):
            _verify()

    def test_an_altered_actor_fails(self, chain_of_five):
        _tamper("UPDATE audit_auditentry SET actor = '999' WHERE id = 2")
        with pytest.raises(CommandError, match="audit entry 2:"):
            _verify()

    def test_an_entry_altered_with_its_own_hash_recomputed_breaks_the_next_link(self, chain_of_five):
        _tamper("UPDATE audit_auditentry SET entry_hash = %s WHERE id = 3", ["f" * 64])
        with pytest.raises(CommandError, match="audit entry 3: content does not match"):
            _verify()

    def test_an_altered_subject_hash_fails(self, chain_of_five):
        _tamper("UPDATE audit_auditsubject SET value_hash = %s WHERE entry_id = 4", ["0" * 64])
        with pytest.raises(CommandError, match="audit entry 4: content does not match"):
            _verify()

    def test_a_deleted_entry_fails_naming_the_one_after_it(self, chain_of_five):
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id = 2")
        _tamper("DELETE FROM audit_auditentry WHERE id = 2")
        with pytest.raises(CommandError, match=r"^audit entry 3: #2 of shard \d+ is missing before it \(removed\)$"):
            _verify()

    def test_a_deleted_last_entry_fails(self, chain_of_five):
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id = 5")
        _tamper("DELETE FROM audit_auditentry WHERE id = 5")
        with pytest.raises(CommandError, match=r"^audit chain shard \d+: entries after #4 were removed \(the chain head names #5\)$"):
            _verify()

    def test_an_inserted_entry_fails(self, chain_of_five):
        fake = AuditEntry.objects.get(pk=5)
        _tamper(
            "INSERT INTO audit_auditentry (id, chain_shard, chain_seq, action, occurred_at, actor, data, prev_hash, entry_hash) "
            "VALUES (6, %s, 6, 'dlq.discarded', now(), '1', '{}', %s, %s)",
            [fake.chain_shard, fake.entry_hash, "e" * 64],
        )
        with pytest.raises(CommandError, match="audit entry 6:"):
            _verify()

    def test_a_renumbered_entry_fails(self, chain_of_five):
        _tamper("DELETE FROM audit_auditsubject WHERE entry_id = 5")
        _tamper("UPDATE audit_auditentry SET id = 50 WHERE id = 5")
        with pytest.raises(CommandError, match="audit entry 50:"):
            _verify()

    def test_it_streams_in_chunks_over_a_longer_chain(self, django_assert_max_num_queries):
        for n in range(120):
            audit_entry_append(action="webhook.received", data={"n": n}, subjects={"user": str(n + 1)} if n % 2 else None)
        # 120 entries in chunks of 25: a handful of queries, not one per entry.
        with django_assert_max_num_queries(15):
            assert _verify(chunk_size=25).startswith("OK 120 entries, head 120:")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_command_exits_non_zero_with_a_one_line_reason(test_database_url):
    import subprocess
    import sys

    from tests.support.processes import ROOT, process_env

    for n in range(3):
        audit_entry_append(action="webhook.received", data={"n": n})
    env = process_env(test_database_url, "memory://")

    def run():
        return subprocess.run([sys.executable, "manage.py", "verify_audit_chain"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    ok = run()
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1].startswith("OK 3 entries, head 3:"), ok.stderr
    _tamper("UPDATE audit_auditentry SET data = '{\"n\": 7}' WHERE id = 2")
    broken = run()
    assert broken.returncode != 0
    assert broken.stderr.strip().splitlines() == [
        "CommandError: audit entry 2: content does not match its hash (altered, or another AUDIT_CHAIN_KEY)"
    ]
