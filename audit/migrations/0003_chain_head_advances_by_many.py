"""Let the chain head advance over a whole batch of entries in one move (`audit_entries_append`).

0002 allowed the head to move forward by exactly one entry. It may now move forward by any number,
to an entry that exists with that hash, provided the entries it passes over form an unbroken
chain from the old head: every id in between exists, the first links to the old head's hash and
each of the others to its predecessor's. That is stricter than 0002 for a single step, which did
not look at the new entry's `prev_hash`. Moving backwards, sideways or to a forged hash is still
refused, as is deleting the head. The check reads only the passed-over entries (primary-key range).
"""

from django.db import migrations

# The message keeps the word "advance": tests and operators match on it.
PG_GUARD = """
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

# 0002's function, restored on the way back.
PG_GUARD_PREVIOUS = """
CREATE OR REPLACE FUNCTION audit_chain_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit chain head cannot be deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.last_id <> OLD.last_id + 1 OR NOT EXISTS (
        SELECT 1 FROM audit_auditentry WHERE id = NEW.last_id AND entry_hash = NEW.last_hash
    ) THEN
        RAISE EXCEPTION 'audit chain head may only advance to the next entry' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
"""

SQLITE_ADVANCE = (
    "CREATE TRIGGER audit_auditchainhead_advance BEFORE UPDATE ON audit_auditchainhead "
    "WHEN NEW.id <> OLD.id OR NEW.last_id <= OLD.last_id OR NOT EXISTS ("
    "SELECT 1 FROM audit_auditentry WHERE id = NEW.last_id AND entry_hash = NEW.last_hash) "
    "OR NOT EXISTS (SELECT 1 FROM audit_auditentry WHERE id = OLD.last_id + 1 AND prev_hash = OLD.last_hash) "
    "OR (SELECT count(*) FROM audit_auditentry e JOIN audit_auditentry p ON p.id = e.id - 1 "
    "WHERE e.id > OLD.last_id + 1 AND e.id <= NEW.last_id AND e.prev_hash = p.entry_hash) "
    "<> NEW.last_id - OLD.last_id - 1 "
    "BEGIN SELECT RAISE(ABORT, 'audit chain head may only advance along the chain to a later entry'); END"
)

SQLITE_ADVANCE_PREVIOUS = (
    "CREATE TRIGGER audit_auditchainhead_advance BEFORE UPDATE ON audit_auditchainhead "
    "WHEN NEW.id <> OLD.id OR NEW.last_id <> OLD.last_id + 1 OR NOT EXISTS ("
    "SELECT 1 FROM audit_auditentry WHERE id = NEW.last_id AND entry_hash = NEW.last_hash) "
    "BEGIN SELECT RAISE(ABORT, 'audit chain head may only advance to the next entry'); END"
)


def _guard_replace(schema_editor, *, pg: str, sqlite: str) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(pg, params=None)  # the SQL has literal %
    elif vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_auditchainhead_advance")
        schema_editor.execute(sqlite)
    else:
        raise RuntimeError(f"no append-only triggers for database vendor {vendor!r}")


def guard_widen(apps, schema_editor):
    _guard_replace(schema_editor, pg=PG_GUARD, sqlite=SQLITE_ADVANCE)


def guard_narrow(apps, schema_editor):
    _guard_replace(schema_editor, pg=PG_GUARD_PREVIOUS, sqlite=SQLITE_ADVANCE_PREVIOUS)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_triggers")]

    operations = [migrations.RunPython(guard_widen, guard_narrow)]
