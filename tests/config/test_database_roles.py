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
                   timeout=240, env={**base_env, "DATABASE_URL": owner_url})

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
