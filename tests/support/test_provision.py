"""The test run's own environment (tests/support/provision.py): no developer configuration leaks in,
and the servers and queue are the run's own."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.support import provision
from tests.support.processes import redis_ready

ROOT = Path(__file__).resolve().parents[2]
BOGUS_DOTENV = """\
DJANGO_DEBUG=true
DATABASE_URL=postgres://bogus:bogus@bogus.invalid:1/bogus
EMAIL_HOST=bogus.invalid
CELERY_QUEUE=bogus
"""


def _settings_seen_with(tmp_path: Path, environ: dict[str, str]) -> dict:
    """Imports a copy of the config package (settings and the modules it imports) beside a .env of
    bogus values, in a fresh interpreter."""
    shutil.copytree(ROOT / "config", tmp_path / "config", ignore=shutil.ignore_patterns("__pycache__", "templates"))
    (tmp_path / ".env").write_text(BOGUS_DOTENV)
    code = ("import json, config.settings as s; print(json.dumps({'debug': s.DEBUG, 'db_host': s.DATABASES['default']"
            "['HOST'], 'email_host': s.EMAIL_HOST, 'queue': s.CELERY_TASK_DEFAULT_QUEUE}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_developers_dotenv_is_ignored_by_the_test_run(tmp_path):
    seen = _settings_seen_with(tmp_path, dict(os.environ))

    assert seen == {"debug": False, "db_host": "127.0.0.1", "email_host": "localhost",
                    "queue": settings.CELERY_TASK_DEFAULT_QUEUE}


def test_without_the_switch_the_same_dotenv_would_be_read(tmp_path):
    environ = {name: value for name, value in os.environ.items()
               if name not in {"PAYHOOK_READ_DOTENV", "DATABASE_URL", "CELERY_QUEUE"}}

    seen = _settings_seen_with(tmp_path, environ)

    assert seen == {"debug": True, "db_host": "bogus.invalid", "email_host": "bogus.invalid", "queue": "bogus"}


def test_inherited_configuration_is_scrubbed_and_the_rest_kept():
    environ = {"SENTRY_DSN": "https://key@sentry.invalid/1", "EMAIL_HOST": "smtp.invalid", "EMAIL_HOST_PASSWORD": "x",
               "DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "config.prod", "DATABASE_URL": "postgres://prod/db",
               "HOME": "/home/dev", "PATH": "/usr/bin"}

    removed = provision.environment_scrub(environ)

    assert environ == {"HOME": "/home/dev", "PATH": "/usr/bin"}
    assert set(removed) >= {"SENTRY_DSN", "EMAIL_HOST", "DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE"}


def test_this_run_has_its_own_queue_database_and_no_error_reporting(db):
    database = settings.DATABASES["default"]

    assert settings.CELERY_TASK_DEFAULT_QUEUE == f"payhook-test-{provision.RUN_ID}"
    assert database["NAME"].startswith("test_")
    private = not os.environ.get("TEST_DATABASE_URL")
    assert (private and int(database["PORT"]) != 5432) or provision.RUN_ID in database["NAME"]
    assert settings.SENTRY_DSN == "" and settings.DEBUG is False


def test_a_missing_tool_that_cannot_be_installed_stops_with_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setattr(provision, "apt_install", lambda packages: "not root, so not installing it")

    with pytest.raises(provision.ProvisionError) as raised:
        provision.tool_ensure("the frobnicator", lambda: None, ["frobnicator"], " or set FROB_URL")

    message = str(raised.value)
    assert "\n" not in message
    assert "apt-get install frobnicator" in message and "or set FROB_URL" in message and "not root" in message


def test_a_named_server_that_does_not_answer_is_reported_not_ignored():
    with pytest.raises(provision.ProvisionError, match="TEST_DATABASE_URL names 127.0.0.1:1"):
        provision.external_database_url("postgres://postgres@127.0.0.1:1/payhook")


def test_a_named_server_gets_a_database_of_this_run(monkeypatch):
    monkeypatch.setattr(provision, "_reachable", lambda url, port: True)

    url = provision.external_database_url("postgres://app:secret@db.example:5433/payhook")

    assert url == f"postgres://app:secret@db.example:5433/payhook_{provision.RUN_ID}"


@pytest.mark.integration
def test_private_servers_start_answer_and_leave_nothing_behind():
    servers = provision.PrivateServers()
    try:
        servers.start(postgres=True, redis=True)
        processes = [servers.postgres, servers.redis]
        assert provision._postgres_ready(servers.database_url)
        assert redis_ready(urlsplit(servers.broker_url).port)
    finally:
        servers.stop()

    assert all(process.poll() is not None for process in processes)
    assert not servers.dir.exists()
