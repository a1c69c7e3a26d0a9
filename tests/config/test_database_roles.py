"""deploy/postgres/10-app-role.sh, run as the postgres image runs it, then migrations as the owner:
the application role can read and write rows and cannot change the schema."""

import os
import secrets
import subprocess
import sys
from urllib.parse import urlsplit

import psycopg
import pytest
from django.conf import settings
from psycopg import errors

ROOT = settings.BASE_DIR


@pytest.fixture
def scratch_cluster_roles():
    """A database and an owner superuser (the image's POSTGRES_USER), unique to this run."""
    url = urlsplit(os.environ["DATABASE_URL"])
    suffix = secrets.token_hex(4)
    names = {"db": f"payhook_roles_{suffix}", "owner": f"payhook_owner_{suffix}", "app": f"payhook_app_{suffix}"}
    admin = psycopg.connect(host=url.hostname, port=url.port or 5432, user=url.username, dbname="postgres",
                            autocommit=True)
    admin.execute(f'CREATE ROLE "{names["owner"]}" SUPERUSER LOGIN')
    admin.execute(f'CREATE DATABASE "{names["db"]}" OWNER "{names["owner"]}"')
    yield {**names, "host": url.hostname, "port": str(url.port or 5432)}
    admin.execute(f'DROP DATABASE IF EXISTS "{names["db"]}" WITH (FORCE)')
    admin.execute(f'DROP ROLE IF EXISTS "{names["app"]}"')
    admin.execute(f'DROP ROLE IF EXISTS "{names["owner"]}"')
    admin.close()


@pytest.mark.integration
@pytest.mark.slow
def test_the_app_role_reads_and_writes_rows_but_cannot_change_the_schema(scratch_cluster_roles):
    r = scratch_cluster_roles
    app_password = secrets.token_hex(16)
    base_env = {**os.environ, "PGHOST": r["host"], "PGPORT": r["port"]}
    subprocess.run(
        ["sh", str(ROOT / "deploy" / "postgres" / "10-app-role.sh")], check=True, capture_output=True, timeout=60,
        env={**base_env, "POSTGRES_USER": r["owner"], "POSTGRES_DB": r["db"], "POSTGRES_APP_PASSWORD": app_password,
             "PAYHOOK_APP_ROLE": r["app"]},
    )
    owner_url = f"postgres://{r['owner']}@{r['host']}:{r['port']}/{r['db']}"
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], cwd=ROOT, check=True, capture_output=True,
                   timeout=240, env={**base_env, "DATABASE_URL": owner_url, "DATABASE_APP_ROLE": r["app"]})

    with psycopg.connect(host=r["host"], port=r["port"], user=r["app"], password=app_password, dbname=r["db"],
                         autocommit=True) as app:
        group_id = app.execute("INSERT INTO auth_group (name) VALUES ('role-test') RETURNING id").fetchone()[0]
        app.execute("UPDATE auth_group SET name = 'role-test-renamed' WHERE id = %s", [group_id])
        assert app.execute("SELECT count(*) FROM webhooks_webhookevent").fetchone() == (0,)
        app.execute("DELETE FROM auth_group WHERE id = %s", [group_id])
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute("CREATE TABLE smuggled (id int)")
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute("ALTER TABLE auth_group ADD COLUMN smuggled int")
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute("TRUNCATE webhooks_webhookevent")

        _the_app_role_only_appends_to_the_audit_log(app, r, app_password, base_env)


AUDIT_TABLES = ("audit_auditentry", "audit_auditsubject", "audit_auditchainhead", "audit_auditchainanchor")


def _manage_as_app(r, app_password, base_env, *args):
    app_url = f"postgres://{r['app']}:{app_password}@{r['host']}:{r['port']}/{r['db']}"
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**base_env, "DATABASE_URL": app_url, "DATABASE_APP_ROLE": r["app"]})


def _the_app_role_only_appends_to_the_audit_log(app, r, app_password, base_env):
    """Migrations 0004/0006 left the app role SELECT and INSERT on the audit log and its anchors (and
    the guarded head move); not owning the tables, it cannot alter them or switch their triggers off."""
    # The service's own code path, as web and worker run it: one append, one batch, then verify.
    appended = _manage_as_app(r, app_password, base_env, "shell", "-c", (
        "from audit.services import audit_entry_append, audit_entries_append; "
        "audit_entry_append(action='webhook.received', data={'n': 1}, subjects={'email': 'erin@example.com'}); "
        "audit_entries_append(entries=[{'action': 'entitlement.granted', 'actor': '7', 'subjects': {'user': '7'}}, "
        "{'action': 'notification.sent', 'dedup_key': 'n:1'}])"
    ))
    assert appended.returncode == 0, appended.stderr[-2000:]
    verified = _manage_as_app(r, app_password, base_env, "verify_audit_chain")
    assert verified.returncode == 0, verified.stderr[-2000:]
    # The head is the newest entry (the two processes may have appended to different shards).
    head_hash = app.execute("SELECT entry_hash FROM audit_auditentry ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert verified.stdout.splitlines()[-1] == f"OK 3 entries, head 3:{head_hash}"

    refused = [
        "UPDATE audit_auditentry SET actor = '1' WHERE id = 1",
        "UPDATE audit_auditsubject SET value_hash = 'x'",
        "DELETE FROM audit_auditentry WHERE id = 3",
        "DELETE FROM audit_auditsubject",
        "DELETE FROM audit_auditchainhead",
        "INSERT INTO audit_auditchainhead (id, last_seq, last_hash) VALUES (99, 0, 'x')",
        "UPDATE audit_auditchainanchor SET prev_hash = 'x'",
        "DELETE FROM audit_auditchainanchor",
        "UPDATE audit_auditchainhead SET id = 2",
        *(f"TRUNCATE {table}" for table in AUDIT_TABLES),
        "TRUNCATE audit_auditentry, audit_auditsubject, audit_auditchainhead CASCADE",
        *(f"ALTER TABLE {table} DISABLE TRIGGER USER" for table in AUDIT_TABLES),
        *(f"ALTER TABLE {table} DISABLE TRIGGER ALL" for table in AUDIT_TABLES),
        "ALTER TABLE audit_auditentry ADD COLUMN smuggled int",
        "ALTER TABLE audit_auditentry OWNER TO CURRENT_USER",
        "DROP TRIGGER audit_auditentry_append_only ON audit_auditentry",
        "DROP TRIGGER audit_auditentry_no_truncate ON audit_auditentry",
        "CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "CREATE TRIGGER smuggled BEFORE INSERT ON audit_auditentry FOR EACH ROW EXECUTE FUNCTION audit_reject_change()",
        "SET session_replication_role = replica",
    ]
    for sql in refused:
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute(sql)
    # The one write it has on the head is the guarded move: never backwards.
    first_hash = app.execute("SELECT entry_hash FROM audit_auditentry WHERE id = 1").fetchone()[0]
    with pytest.raises(errors.RestrictViolation, match="advance"):
        app.execute("UPDATE audit_auditchainhead SET last_seq = 1, last_hash = %s WHERE id = (SELECT chain_shard FROM audit_auditentry WHERE id = 1)", [first_hash])

    assert app.execute("SELECT count(*) FROM audit_auditentry").fetchone() == (3,)
    assert app.execute("SELECT count(*) FROM audit_auditsubject").fetchone() == (2,)
    verified = _manage_as_app(r, app_password, base_env, "verify_audit_chain", "--expect-head", f"3:{head_hash}")
    assert verified.returncode == 0 and verified.stdout.splitlines()[-1] == f"OK 3 entries, head 3:{head_hash}"
    # The head publisher runs under the app role too.
    published = _manage_as_app(r, app_password, base_env, "shell", "-c",
                               "from audit.tasks import audit_chain_head_publish; print(audit_chain_head_publish())")
    assert published.returncode == 0 and "'count': 3" in published.stdout, published.stderr[-2000:]
