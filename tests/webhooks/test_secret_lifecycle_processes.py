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

from tests.conftest import signed_headers
from tests.support.processes import web_start
from webhooks import samples

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKERS = 4
# Sent all at once: four sync workers each take several, so every worker's cache answers.
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


def _other_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


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
        assert _all_accepted(_burst(url, stripe_secret))
        pids = {line for line in web.log().splitlines() if "Booting worker with pid" in line}
        assert len(pids) == WORKERS
        # Each worker keeps its own database connection once it served a request: all four did.
        assert _other_connections() == WORKERS

        added = f"whsec_{secrets.token_hex(16)}"
        _command("add-secret", "stripe", "--secret", added)
        after_add = _burst(url, added)

        _command("remove-secret", "stripe", "--secret", stripe_secret)
        after_remove = _burst(url, stripe_secret)
        still_added = _burst(url, added)

        rolled = f"whsec_{secrets.token_hex(16)}"
        _command("add-secret", "stripe", "--secret", rolled, "--expire-others-in", "0")
        after_roll_old = _burst(url, added)
        after_roll_new = _burst(url, rolled)
    finally:
        web.stop()

    assert _all_accepted(after_add), after_add
    assert _all_refused(after_remove), after_remove
    assert _all_accepted(still_added), still_added
    assert _all_refused(after_roll_old), after_roll_old
    assert _all_accepted(after_roll_new), after_roll_new
