"""Make the audit tables append-only in the database itself, not just in the application.

Entries and subjects reject UPDATE and DELETE. The chain head may only advance by one, to an
entry that exists with that hash, and may not be deleted. TRUNCATE is not a row operation and is
not blocked (pytest-django flushes with it on PostgreSQL); in production the application's role
should not own these tables, so it cannot TRUNCATE or disable the triggers (docs/audit.md).
"""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only: % on % rejected', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

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

CREATE TRIGGER audit_auditentry_append_only BEFORE UPDATE OR DELETE ON audit_auditentry
    FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_auditsubject_append_only BEFORE UPDATE OR DELETE ON audit_auditsubject
    FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_auditchainhead_guard BEFORE UPDATE OR DELETE ON audit_auditchainhead
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_guard();
"""

PG_REVERSE = """
DROP TRIGGER IF EXISTS audit_auditchainhead_guard ON audit_auditchainhead;
DROP TRIGGER IF EXISTS audit_auditsubject_append_only ON audit_auditsubject;
DROP TRIGGER IF EXISTS audit_auditentry_append_only ON audit_auditentry;
DROP FUNCTION IF EXISTS audit_chain_head_guard();
DROP FUNCTION IF EXISTS audit_reject_change();
"""

SQLITE_FORWARD = [
    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {op} on {table} rejected'); END"
    for table in ("audit_auditentry", "audit_auditsubject")
    for op in ("UPDATE", "DELETE")
] + [
    "CREATE TRIGGER audit_auditchainhead_no_delete BEFORE DELETE ON audit_auditchainhead "
    "BEGIN SELECT RAISE(ABORT, 'audit chain head cannot be deleted'); END",
    "CREATE TRIGGER audit_auditchainhead_advance BEFORE UPDATE ON audit_auditchainhead "
    "WHEN NEW.id <> OLD.id OR NEW.last_id <> OLD.last_id + 1 OR NOT EXISTS ("
    "SELECT 1 FROM audit_auditentry WHERE id = NEW.last_id AND entry_hash = NEW.last_hash) "
    "BEGIN SELECT RAISE(ABORT, 'audit chain head may only advance to the next entry'); END",
]

SQLITE_TRIGGERS = [
    "audit_auditentry_no_update", "audit_auditentry_no_delete", "audit_auditsubject_no_update",
    "audit_auditsubject_no_delete", "audit_auditchainhead_no_delete", "audit_auditchainhead_advance",
]


def triggers_create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)  # the SQL has literal %
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)
    else:
        raise RuntimeError(f"no append-only triggers for database vendor {vendor!r}")


def triggers_drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_REVERSE)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(triggers_create, triggers_drop)]
