"""Redis dies and comes back (empty) during a stream of POSTs: every POST answers 200 and every
event is fulfilled once, republished by the sweep."""

import json
import threading
import time

import pytest
import requests

from tests.conftest import signed_headers
from tests.faults.invariants import invariants_check
from tests.support.processes import RedisServer, process_env, wait_for, web_start, worker_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 80


def test_redis_killed_and_restarted_mid_stream_loses_nothing(purchases, stripe_endpoint, stripe_secret, test_database_url, tmp_path):
    events = purchases(N)
    redis = RedisServer(tmp_path)
    redis.start()
    env = process_env(test_database_url, redis.url, WEBHOOK_SWEEP_INTERVAL_SECONDS="1",
                      WEBHOOK_REDISPATCH_AFTER_SECONDS="2", WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS="5",
                      EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=str(tmp_path / "mail"))
    web, url = web_start(env, tmp_path / "web.log", workers=2)
    worker = worker_start(env, tmp_path / "worker.log", concurrency=1, beat=True)
    statuses = []
    try:
        def outage():
            time.sleep(0.5)
            redis.kill()
            time.sleep(2)
            redis.start()

        killer = threading.Thread(target=outage)
        killer.start()
        for event in events:
            body = json.dumps(event).encode()
            headers = {"Content-Type": "application/json", **signed_headers("stripe", stripe_secret, body)}
            statuses.append(requests.post(f"{url}/webhooks/stripe/", data=body, headers=headers, timeout=10).status_code)
            time.sleep(0.03)
        killer.join()
        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=120, message="every event fulfilled after the outage")
    finally:
        worker.stop()
        web.stop()
        redis.kill()

    assert statuses == [200] * N
    # The fault landed: the worker lost its broker connection and re-established it.
    assert "Connection to broker lost" in worker.log(), worker.log()[-3000:]
    counts = invariants_check(expected_events=N, mail_dir=tmp_path / "mail")
    assert counts["status_processed"] == N
    assert counts["entitlements"] == 2 * N
    assert counts["emails_sent"] == N == counts["mail_messages"]
