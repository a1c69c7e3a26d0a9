"""A storm of concurrent duplicate deliveries while workers fulfil: one row and one effect each."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import signed_headers
from tests.faults.invariants import invariants_check
from tests.support.processes import wait_for, web_start, worker_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EVENTS, COPIES = 20, 10


def test_duplicate_storm_stores_and_fulfils_each_event_once(purchases, stripe_endpoint, stripe_secret, fault_env, tmp_path):
    events = purchases(EVENTS)
    web, url = web_start(fault_env, tmp_path / "web.log", workers=3)
    worker = worker_start(fault_env, tmp_path / "worker.log", concurrency=2)
    try:
        def deliver(event):
            body = json.dumps(event).encode()
            headers = {"Content-Type": "application/json", **signed_headers("stripe", stripe_secret, body)}
            return requests.post(f"{url}/webhooks/stripe/", data=body, headers=headers, timeout=30).json()

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(deliver, [event for event in events for _ in range(COPIES)]))
        fulfilled_during_storm = WebhookEvent.objects.filter(status="processed").count()
        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=120, message="every event fulfilled")
    finally:
        worker.stop()
        web.stop()

    # The storm overlapped fulfilment: duplicates kept arriving while workers worked on the originals.
    assert fulfilled_during_storm > 0
    assert sum(a["status"] == "accepted" for a in answers) == EVENTS
    assert sum(a["status"] == "duplicate" for a in answers) == EVENTS * (COPIES - 1)
    counts = invariants_check(expected_events=EVENTS, mail_dir=tmp_path / "mail")
    assert counts["entitlements"] == 2 * EVENTS
    assert counts["notifications"] == 2 * EVENTS
    assert counts["emails_sent"] == EVENTS == counts["mail_messages"]
