"""Key the hash chain, refuse TRUNCATE, and leave the application role only SELECT and INSERT.

1. Keyed chain. Entries are now hashed with HMAC-SHA256 under AUDIT_CHAIN_KEY (audit/chain.py).
   Existing entries are not rewritten: re-hashing them would mean disabling the append-only
   triggers and rewriting history, and would launder any earlier tampering. Instead, when the log
   already holds entries, this migration appends one keyed `audit.chain_keyed` entry after the
   head. Verification checks the entries before it with plain SHA-256 and everything from it on
   with the key; since its keyed hash covers the last unkeyed entry's hash, the unkeyed prefix
   cannot be rewritten without the key either. This migration therefore needs AUDIT_CHAIN_KEY in
   its environment, like every other command (the setting is required).
2. TRUNCATE is not a row operation, so 0002's row triggers never saw it. A statement-level
   BEFORE TRUNCATE trigger now refuses it on the three audit tables, except for a superuser: the
   test suite flushes tables with TRUNCATE as one, and a superuser can drop the trigger anyway.
3. When the role named by DATABASE_APP_ROLE exists (deploy/postgres/10-app-role.sh), it keeps only
   SELECT and INSERT on entries and subjects, and SELECT plus UPDATE of the two head columns on the
   head. UPDATE on the head is safe: the head trigger (0003) lets it move only forward along valid
   links to entries that exist, which the role could append anyway; it cannot move back, sideways
   or be deleted. Not owning the tables, the role cannot ALTER them or disable their triggers.
"""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

from audit import chain

TABLES = ("audit_auditentry", "audit_auditsubject", "audit_auditchainhead")

PG_TRUNCATE_GUARD = """
CREATE OR REPLACE FUNCTION audit_reject_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit log is append-only: TRUNCATE on % rejected', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
""" + "".join(
    f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_truncate();\n"
    for table in TABLES
)

PG_TRUNCATE_GUARD_REVERSE = "".join(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};\n" for table in TABLES) + (
    "DROP FUNCTION IF EXISTS audit_reject_truncate();\n"
)


def truncate_guard_create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":  # SQLite has no TRUNCATE
        schema_editor.execute(PG_TRUNCATE_GUARD, params=None)


def truncate_guard_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_TRUNCATE_GUARD_REVERSE, params=None)


def chain_seal(apps, schema_editor):
    """Append the keyed `audit.chain_keyed` entry after an existing unkeyed log."""
    AuditEntry = apps.get_model("audit", "AuditEntry")
    AuditChainHead = apps.get_model("audit", "AuditChainHead")
    db = schema_editor.connection.alias
    head = AuditChainHead.objects.using(db).select_for_update().filter(pk=1).first()
    if head is None or head.last_id == 0:
        # Nothing to seal (a fresh log is keyed from entry 1), or a log whose head is already
        # missing: that one is broken, and sealing it would hide it.
        return
    if AuditEntry.objects.using(db).filter(id__gt=head.last_id).exists():
        return  # entries past the head: broken too; verify_audit_chain reports it
    data = {"scheme": "hmac-sha256", "unkeyed_through": head.last_id}
    entry = AuditEntry(
        id=head.last_id + 1, action=chain.CHAIN_KEYED_ACTION, occurred_at=timezone.now(), actor="system",
        event_id=None, data=data, dedup_key=chain.CHAIN_KEYED_ACTION, prev_hash=head.last_hash,
    )
    content = chain.entry_content(
        id=entry.id, action=entry.action, occurred_at=entry.occurred_at, actor=entry.actor, event_id=None,
        data=data, dedup_key=entry.dedup_key, subjects=[],
    )
    entry.entry_hash = chain.entry_hash(head.last_hash, content)
    entry.save(using=db, force_insert=True)
    AuditChainHead.objects.using(db).filter(pk=1).update(last_id=entry.id, last_hash=entry.entry_hash)


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
    for table in TABLES:
        schema_editor.execute(f"REVOKE ALL ON {quote(table)} FROM {app}")
    schema_editor.execute(f"GRANT SELECT, INSERT ON {quote('audit_auditentry')}, {quote('audit_auditsubject')} TO {app}")
    # SELECT … FOR UPDATE (the chain lock) needs UPDATE on some column; the head trigger guards it.
    schema_editor.execute(f"GRANT SELECT, UPDATE (last_id, last_hash) ON {quote('audit_auditchainhead')} TO {app}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_chain_head_advances_by_many")]

    operations = [
        migrations.RunPython(truncate_guard_create, truncate_guard_drop),
        migrations.RunPython(chain_seal, migrations.RunPython.noop),
        migrations.RunPython(app_role_grants, migrations.RunPython.noop),
    ]
