"""The `make run` configuration, end to end: SQLite file, kombu's filesystem broker, and the three
Procfile processes (gunicorn, Celery worker, Celery beat) as separate processes, in a temporary var/.

No PostgreSQL and no Redis: DATABASE_URL and CELERY_BROKER_URL are removed from the environment,
exactly as on a newcomer's machine.
"""

import json
import os
import re
import sqlite3
import subprocess
import time

import pytest
import requests

from providers import scheme_get
from providers.stripe import samples
from tests.support.processes import (
    BIN,
    ROOT,
    Process,
    free_port,
    procfile_commands,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "whsec_embedded_first_0123456789abcdef"
ROTATED = "whsec_embedded_rotated_0123456789abcd"


@pytest.fixture
def embedded(tmp_path):
    """The embedded default's environment, writing only under tmp_path/var, with its web port."""
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    port = free_port()
    env.update(
        PAYHOOK_VAR_DIR=str(tmp_path / "var"),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        CELERY_CONCURRENCY="1",
        DJANGO_LOG_LEVEL="INFO",  # as under `make run`; the test settings default to WARNING
        WEBHOOK_SWEEP_INTERVAL_SECONDS="2",  # beat sends every 2 s: its chatter would show in the logs
    )
    # …nor what an in-process Celery worker of an earlier test left in the environment (CELERY_LOG_LEVEL=40).
    for name in ("EMAIL_BACKEND", "EMAIL_FILE_PATH", "CELERY_INTERNAL_LOG_LEVEL", "BIND", "CELERY_LOG_LEVEL", "CELERY_LOG_FILE"):
        env.pop(name, None)  # the embedded defaults, not whatever the test run inherited
    return env, port, tmp_path / "var"


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _query(database, sql: str, *params):
    # Read-only and outside Django: the test process stays on its own (PostgreSQL) settings.
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
        return connection.execute(sql, params).fetchall()


def _post_signed(url: str, secret: str) -> requests.Response:
    body = json.dumps(samples.stripe_trigger_event("checkout.session.completed")).encode()
    headers = scheme_get("stripe").sign(secret=secret, body=body, timestamp=int(time.time()), event_id="")
    return requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10)


def test_make_run_configuration_processes_rotates_secrets_and_replays_a_dead_letter(embedded, tmp_path):
    env, port, var = embedded
    base = f"http://127.0.0.1:{port}"
    webhook_url = f"{base}/webhooks/stripe/"
    database = var / "payhook.sqlite3"
    started = time.monotonic()

    _manage(env, "migrate", "--no-input", "--verbosity", "0")
    processes = {
        name: Process.shell(command, env, tmp_path / f"{name}.log", name=name)
        for name, command in procfile_commands().items()
    }
    try:
        _manage(env, "webhook_endpoint", "create", "stripe", "--scheme", "stripe", "--secret", SECRET)

        def web_up():
            assert processes["web"].alive(), processes["web"].log()[-3000:]
            try:
                return requests.get(f"{base}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(web_up, timeout=30, interval=0.2, message="gunicorn up")

        # The admin is styled: gunicorn itself serves the static files.
        css = requests.get(f"{base}/static/admin/css/base.css", timeout=5)
        assert css.status_code == 200
        assert css.headers["Content-Type"].startswith("text/css")

        # 1. The newcomer's command. The catalog is still empty, so the event becomes a dead letter.
        sent = _manage(env, "send_test_webhook", "stripe", "checkout.session.completed", "--url", webhook_url)
        assert "-> 200" in sent, sent
        dead_id = json.loads(sent.split("-> 200 ", 1)[1])["event_id"]
        wait_for(lambda: _query(database, "SELECT status FROM webhooks_webhookevent WHERE id = ?", dead_id.replace("-", ""))
                 == [("dead",)], timeout=30, interval=0.3, message="the event dead-lettered")
        [(letter_id, error_type)] = _query(
            database, "SELECT id, error_type FROM webhooks_deadletter WHERE event_id = ? AND status = 'open'",
            dead_id.replace("-", ""))
        assert error_type == "PriceNotInCatalog"

        # 2. Fix the cause, then replay through the operators' API; the event is fulfilled.
        _manage(env, "import_catalog", str(ROOT / "docs" / "examples" / "catalog.json"))
        _manage(env, "shell", "-c", (
            "from django.contrib.auth.models import Group, User; "
            "u = User.objects.create_user('operator'); u.groups.add(Group.objects.get(name='operators'))"
        ))
        token = _manage(env, "drf_create_token", "operator").strip()  # the contract's command: the key alone
        replay = requests.post(f"{base}/api/v1/dead-letters/{letter_id}/replay/", json={"note": "price added to the catalog"},
                               headers={"Authorization": f"Token {token}"}, timeout=10)
        assert replay.status_code == 200, replay.text
        wait_for(lambda: _query(database, "SELECT status FROM webhooks_webhookevent WHERE id = ?", dead_id.replace("-", ""))
                 == [("processed",)], timeout=30, interval=0.3, message="the replayed event processed")

        # 3. A secret added verifies on the next request; once removed, it is refused.
        _manage(env, "webhook_endpoint", "add-secret", "stripe", "--secret", ROTATED)
        accepted = _post_signed(webhook_url, ROTATED)
        assert accepted.status_code == 200, accepted.text
        new_id = accepted.json()["event_id"]
        _manage(env, "webhook_endpoint", "remove-secret", "stripe", "--secret", ROTATED)
        refused = _post_signed(webhook_url, ROTATED)
        assert refused.status_code == 400
        assert refused.json() == {"error": "invalid_signature"}
        assert _post_signed(webhook_url, SECRET).status_code == 200  # the first secret still verifies
        wait_for(lambda: _query(database, "SELECT status FROM webhooks_webhookevent WHERE id = ?", new_id.replace("-", ""))
                 == [("processed",)], timeout=30, interval=0.3, message="the new event processed")
    finally:
        for process in processes.values():
            process.stop()
    elapsed = time.monotonic() - started

    # One line per event from payhook, none of Celery's per-task or per-schedule chatter.
    worker_log, beat_log = processes["worker"].log(), processes["beat"].log()
    # JSON lines (docs/logging.md); Celery's start-up banner is not one unless CELERY_QUIET is set.
    lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    assert any(o["event"] == "event processed" and o.get("event_id") == str(new_id) for o in lines), worker_log[-3000:]
    assert any(o["event"] == "event dead-lettered" and o.get("event_id") for o in lines)
    assert " ready." in worker_log  # start-up stays visible
    assert not re.search(r"Task webhooks\.tasks\.\w+\[[^\]]+\] (received|succeeded)", worker_log), worker_log[-3000:]
    assert "Sending due task" not in beat_log, beat_log[-2000:]
    assert "No hostname was supplied" not in worker_log + beat_log + processes["web"].log()
    # Everything stayed under the configured var/: the broker's control folder too.
    assert (var / "broker" / "control").is_dir()
    assert not (ROOT / "control").exists()
    assert (var / "celerybeat-schedule").exists() or list(var.glob("celerybeat-schedule*"))
    assert elapsed < 90, f"took {elapsed:.0f}s"
