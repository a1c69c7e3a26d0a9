"""Several chains (shards) instead of one, their heads anchored together (issue 13, docs/audit.md).

Every append used to lock the single chain head until its transaction committed: one commit at a
time across all workers and hosts. Now each shard has its own head and an append locks any free one.

1. Entries get their position: `chain_shard` and `chain_seq` (unique together, gapless per shard).
   The existing single chain becomes shard 1's history, unchanged: chain_seq = id, its head the
   shard-1 head (the head row with pk 1 already). Hashes are not recomputed, so that log verifies as
   before (the `audit.chain_keyed` prefix rule included). Filling chain_seq is the one UPDATE of
   entries ever made: the append-only trigger is switched off for it, inside this migration's
   transaction, by the schema owner; at 10 M entries expect it to take minutes and rewrite the table.
2. `id` now comes from a sequence (gaps allowed), started after the highest existing id.
3. The head trigger (0002/0003) now checks a head's move along its own shard.
4. `AuditChainAnchor`: keyed, chained records of every shard head; append-only like the entries,
   TRUNCATE refused as in 0004.
5. The application role (0004) gets the same rights as before, plus the sequence and the anchors
   (SELECT, INSERT).
Backwards: possible only while every entry is in shard 1 (the fields are dropped, the old head
trigger restored); with entries in other shards the single chain cannot be rebuilt, and it refuses.
"""

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

PG_ID_SEQUENCE = "audit_auditentry_id_seq"

PG_GUARD = """
CREATE OR REPLACE FUNCTION audit_chain_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit chain head cannot be deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.last_seq <= OLD.last_seq OR NOT EXISTS (
        SELECT 1 FROM audit_auditentry
        WHERE chain_shard = NEW.id AND chain_seq = NEW.last_seq AND entry_hash = NEW.last_hash
    ) OR NOT EXISTS (
        SELECT 1 FROM audit_auditentry
        WHERE chain_shard = NEW.id AND chain_seq = OLD.last_seq + 1 AND prev_hash = OLD.last_hash
    ) OR (
        SELECT count(*) FROM audit_auditentry e
        JOIN audit_auditentry p ON p.chain_shard = e.chain_shard AND p.chain_seq = e.chain_seq - 1
        WHERE e.chain_shard = NEW.id AND e.chain_seq > OLD.last_seq + 1 AND e.chain_seq <= NEW.last_seq
          AND e.prev_hash = p.entry_hash
    ) <> NEW.last_seq - OLD.last_seq - 1 THEN
        RAISE EXCEPTION 'audit chain head may only advance along the chain to a later entry'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
"""

# 0003's function, restored on the way back.
PG_GUARD_PREVIOUS = """
CREATE OR REPLACE FUNCTION audit_chain_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit chain head cannot be deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.last_id <= OLD.last_id OR NOT EXISTS (
        SELECT 1 FROM audit_auditentry WHERE id = NEW.last_id AND entry_hash = NEW.last_hash
    ) OR NOT EXISTS (
        SELECT 1 FROM audit_auditentry WHERE id = OLD.last_id + 1 AND prev_hash = OLD.last_hash
    ) OR (
        SELECT count(*) FROM audit_auditentry e JOIN audit_auditentry p ON p.id = e.id - 1
        WHERE e.id > OLD.last_id + 1 AND e.id <= NEW.last_id AND e.prev_hash = p.entry_hash
    ) <> NEW.last_id - OLD.last_id - 1 THEN
        RAISE EXCEPTION 'audit chain head may only advance along the chain to a later entry'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
"""

SQLITE_ADVANCE = (
    "CREATE TRIGGER audit_auditchainhead_advance BEFORE UPDATE ON audit_auditchainhead "
    "WHEN NEW.id <> OLD.id OR NEW.last_seq <= OLD.last_seq OR NOT EXISTS ("
    "SELECT 1 FROM audit_auditentry WHERE chain_shard = NEW.id AND chain_seq = NEW.last_seq AND entry_hash = NEW.last_hash) "
    "OR NOT EXISTS (SELECT 1 FROM audit_auditentry WHERE chain_shard = NEW.id AND chain_seq = OLD.last_seq + 1 "
    "AND prev_hash = OLD.last_hash) "
    "OR (SELECT count(*) FROM audit_auditentry e JOIN audit_auditentry p "
    "ON p.chain_shard = e.chain_shard AND p.chain_seq = e.chain_seq - 1 "
    "WHERE e.chain_shard = NEW.id AND e.chain_seq > OLD.last_seq + 1 AND e.chain_seq <= NEW.last_seq "
    "AND e.prev_hash = p.entry_hash) <> NEW.last_seq - OLD.last_seq - 1 "
    "BEGIN SELECT RAISE(ABORT, 'audit chain head may only advance along the chain to a later entry'); END"
)

SQLITE_ADVANCE_PREVIOUS = (
    "CREATE TRIGGER audit_auditchainhead_advance BEFORE UPDATE ON audit_auditchainhead "
    "WHEN NEW.id <> OLD.id OR NEW.last_id <= OLD.last_id OR NOT EXISTS ("
    "SELECT 1 FROM audit_auditentry WHERE id = NEW.last_id AND entry_hash = NEW.last_hash) "
    "OR NOT EXISTS (SELECT 1 FROM audit_auditentry WHERE id = OLD.last_id + 1 AND prev_hash = OLD.last_hash) "
    "OR (SELECT count(*) FROM audit_auditentry e JOIN audit_auditentry p ON p.id = e.id - 1 "
    "WHERE e.id > OLD.last_id + 1 AND e.id <= NEW.last_id AND e.prev_hash = p.entry_hash) "
    "<> NEW.last_id - OLD.last_id - 1 "
    "BEGIN SELECT RAISE(ABORT, 'audit chain head may only advance along the chain to a later entry'); END"
)

PG_ANCHOR_GUARDS = """
CREATE TRIGGER audit_auditchainanchor_append_only BEFORE UPDATE OR DELETE ON audit_auditchainanchor
    FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_auditchainanchor_no_truncate BEFORE TRUNCATE ON audit_auditchainanchor
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_truncate();
"""

PG_ANCHOR_GUARDS_REVERSE = """
DROP TRIGGER IF EXISTS audit_auditchainanchor_no_truncate ON audit_auditchainanchor;
DROP TRIGGER IF EXISTS audit_auditchainanchor_append_only ON audit_auditchainanchor;
"""

SQLITE_ANCHOR_GUARDS = [
    f"CREATE TRIGGER audit_auditchainanchor_no_{op.lower()} BEFORE {op} ON audit_auditchainanchor "
    f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {op} on audit_auditchainanchor rejected'); END"
    for op in ("UPDATE", "DELETE")
]


SQLITE_ENTRY_TRIGGERS = [
    f"CREATE TRIGGER audit_auditentry_no_{op.lower()} BEFORE {op} ON audit_auditentry "
    f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {op} on audit_auditentry rejected'); END"
    for op in ("UPDATE", "DELETE")
]


def sqlite_triggers_off(apps, schema_editor):
    """SQLite rebuilds a table to add or change a column, dropping its triggers with it, and a trigger
    on another table that names it breaks the rebuild: take them off first, put them back after."""
    if _vendor(schema_editor) == "sqlite":
        for name in ("audit_auditchainhead_advance", "audit_auditentry_no_update", "audit_auditentry_no_delete"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def sqlite_entry_triggers_on(apps, schema_editor):
    if _vendor(schema_editor) == "sqlite":
        for name in ("audit_auditentry_no_update", "audit_auditentry_no_delete"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")
        for statement in SQLITE_ENTRY_TRIGGERS:
            schema_editor.execute(statement)


def _vendor(schema_editor) -> str:
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise RuntimeError(f"no audit chain migration for database vendor {vendor!r}")
    return vendor


def history_to_shard_one(apps, schema_editor):
    """chain_seq = id for the existing single chain: the one sanctioned UPDATE of entries."""
    if _vendor(schema_editor) == "postgresql":
        schema_editor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_auditentry_append_only")
        schema_editor.execute("UPDATE audit_auditentry SET chain_seq = id")
        schema_editor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_auditentry_append_only")
    else:  # its triggers are off during this migration (sqlite_triggers_off)
        schema_editor.execute("UPDATE audit_auditentry SET chain_seq = id")


def history_back_check(apps, schema_editor):
    AuditEntry = apps.get_model("audit", "AuditEntry")
    if AuditEntry.objects.using(schema_editor.connection.alias).exclude(chain_shard=1).exists():
        raise RuntimeError("audit entries in shards other than 1: the single chain cannot be rebuilt")


def guard_per_shard(apps, schema_editor):
    if _vendor(schema_editor) == "postgresql":
        schema_editor.execute(PG_GUARD, params=None)  # the SQL has literal %
        schema_editor.execute(PG_ANCHOR_GUARDS, params=None)
    else:
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_auditchainhead_advance")
        schema_editor.execute(SQLITE_ADVANCE)
        for statement in SQLITE_ANCHOR_GUARDS:
            schema_editor.execute(statement)


def guard_single(apps, schema_editor):
    if _vendor(schema_editor) == "postgresql":
        schema_editor.execute(PG_ANCHOR_GUARDS_REVERSE, params=None)
        schema_editor.execute(PG_GUARD_PREVIOUS, params=None)
    else:
        for op in ("update", "delete"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS audit_auditchainanchor_no_{op}")
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_auditchainhead_advance")
        schema_editor.execute(SQLITE_ADVANCE_PREVIOUS)


def id_sequence_create(apps, schema_editor):
    """PostgreSQL: ids from a sequence, after the highest id (SQLite appends take MAX(id) + 1)."""
    if _vendor(schema_editor) != "postgresql":
        return
    schema_editor.execute(f"CREATE SEQUENCE {PG_ID_SEQUENCE} AS bigint OWNED BY audit_auditentry.id")
    schema_editor.execute(
        f"SELECT setval('{PG_ID_SEQUENCE}', COALESCE((SELECT MAX(id) FROM audit_auditentry), 0) + 1, false)"
    )


def id_sequence_drop(apps, schema_editor):
    if _vendor(schema_editor) == "postgresql":
        schema_editor.execute(f"DROP SEQUENCE IF EXISTS {PG_ID_SEQUENCE}")


def app_role_grants(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    role = settings.DATABASE_APP_ROLE
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone() is None:
            return
    quote = connection.ops.quote_name
    app = quote(role)
    schema_editor.execute(f"REVOKE ALL ON {quote('audit_auditchainhead')}, {quote('audit_auditchainanchor')} FROM {app}")
    schema_editor.execute(f"GRANT SELECT, INSERT ON {quote('audit_auditchainanchor')} TO {app}")
    # SELECT … FOR UPDATE (the shard lock) needs UPDATE on some column; the head trigger guards it.
    schema_editor.execute(f"GRANT SELECT, UPDATE (last_seq, last_hash) ON {quote('audit_auditchainhead')} TO {app}")
    schema_editor.execute(f"GRANT USAGE ON SEQUENCE {PG_ID_SEQUENCE} TO {app}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_subject_hash_entry_index")]

    operations = [
        migrations.RunPython(sqlite_triggers_off, sqlite_entry_triggers_on),
        migrations.AddField(
            model_name="auditentry", name="chain_shard",
            field=models.PositiveSmallIntegerField(default=1), preserve_default=False,
        ),
        migrations.AddField(model_name="auditentry", name="chain_seq", field=models.BigIntegerField(null=True)),
        migrations.RunPython(history_to_shard_one, history_back_check),
        migrations.AlterField(model_name="auditentry", name="chain_seq", field=models.BigIntegerField()),
        migrations.AddConstraint(
            model_name="auditentry",
            constraint=models.UniqueConstraint(fields=("chain_shard", "chain_seq"), name="auditentry_unique_chain_position"),
        ),
        migrations.RenameField(model_name="auditchainhead", old_name="last_id", new_name="last_seq"),
        migrations.CreateModel(
            name="AuditChainAnchor",
            fields=[
                ("id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("heads", models.JSONField()),
                ("prev_hash", models.CharField(max_length=64)),
                ("anchor_hash", models.CharField(max_length=64)),
            ],
            options={"ordering": ["-id"]},
        ),
        migrations.RunPython(sqlite_entry_triggers_on, sqlite_triggers_off),
        migrations.RunPython(guard_per_shard, guard_single),
        migrations.RunPython(id_sequence_create, id_sequence_drop),
        migrations.RunPython(app_role_grants, migrations.RunPython.noop),
    ]

