"""Secret changes against a real gunicorn with 4 worker processes, each with its own key cache: every
change made by the management command applies to the very next request in every worker."""

import json
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.db import connection

from providers.stripe import samples
from tests.conftest import signed_headers
from tests.support.processes import web_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKERS = 4
# Sent all at once, so the four sync workers share them; repeated until each worker has answered.
BURST = 16


def _burst(url: str, secret: str) -> list[tuple[int, dict]]:
    barrier = threading.Barrier(BURST)

    def deliver(_):
        body = json.dumps(samples.stripe_event("invoice.paid")).encode()
        headers = {"Content-Type": "application/json", **signed_headers("stripe", secret, body)}
        barrier.wait(timeout=30)
        response = requests.post(f"{url}/webhooks/stripe/", data=body, headers=headers, timeout=30)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        return list(pool.map(deliver, range(BURST)))


def _db_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def _workers_active_since(moment) -> int:
    """Web workers whose database connection ran a statement after `moment`: each request runs at
    least one, so this counts the workers that answered since then."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state_change > %s",
            [moment],
        )
        return cursor.fetchone()[0]


def _from_every_worker(url: str, secret: str) -> list[tuple[int, dict]]:
    """Bursts of requests until every worker has answered at least one; all the answers."""
    since, answers = _db_now(), []
    for _ in range(6):
        answers += _burst(url, secret)
        if _workers_active_since(since) == WORKERS:
            return answers
    raise AssertionError(f"only {_workers_active_since(since)} of {WORKERS} workers answered")


def _command(*args) -> str:
    out = StringIO()
    call_command("webhook_endpoint", *args, stdout=out)
    return out.getvalue()


def _all_accepted(answers) -> bool:
    return all(status == 200 and body["status"] == "accepted" for status, body in answers)


def _all_refused(answers) -> bool:
    return all(status == 400 and body == {"error": "invalid_signature"} for status, body in answers)


def test_secret_changes_apply_to_the_next_request_in_every_web_process(stripe_endpoint, stripe_secret, worker_env, tmp_path):
    web, url = web_start(worker_env, tmp_path / "web.log", workers=WORKERS)
    try:
        # Every worker caches the endpoint's keys (as of its current version).
        assert _all_accepted(_from_every_worker(url, stripe_secret))

        added = f"whsec_{secrets.token_hex(16)}"
        _command("add-secret", "stripe", "--secret", added)
        after_add = _from_every_worker(url, added)

        _command("remove-secret", "stripe", "--secret", stripe_secret)
        after_remove = _from_every_worker(url, stripe_secret)
        still_added = _from_every_worker(url, added)

        rolled = f"whsec_{secrets.token_hex(16)}"
        _command("add-secret", "stripe", "--secret", rolled, "--expire-others-in", "0")
        after_roll_old = _from_every_worker(url, added)
        after_roll_new = _from_every_worker(url, rolled)
    finally:
        web.stop()

    assert _all_accepted(after_add), after_add
    assert _all_refused(after_remove), after_remove
    assert _all_accepted(still_added), still_added
    assert _all_refused(after_roll_old), after_roll_old
    assert _all_accepted(after_roll_new), after_roll_new
