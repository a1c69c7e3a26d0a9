"""Ingestion against real PostgreSQL, Redis, gunicorn and Celery worker processes (no eager mode)."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings

from fulfillment.services import catalog_import
from providers.stripe import samples
from tests.conftest import signed_headers
from tests.support.processes import wait_for, web_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _status(event_id: str) -> str:
    return WebhookEvent.objects.values_list("status", flat=True).get(id=event_id)


def test_accepted_event_is_processed_by_a_real_worker(celery_worker_process, stripe_endpoint, post_stripe):
    catalog_import(data=json.loads((settings.BASE_DIR / "docs/examples/catalog.json").read_text()))

    response = post_stripe(samples.stripe_trigger_event("checkout.session.completed"))

    assert response.status_code == 200
    event_id = response.json()["event_id"]
    wait_for(lambda: _status(event_id) == "processed", timeout=30, message="event processed")


def test_event_payhook_does_not_fulfil_ends_ignored(celery_worker_process, stripe_endpoint, post_stripe):
    response = post_stripe(samples.stripe_event("customer.created"))

    event_id = response.json()["event_id"]
    wait_for(lambda: _status(event_id) == "ignored", timeout=30, message="event ignored")


def test_fifty_concurrent_deliveries_of_one_event_store_one_row(stripe_endpoint, stripe_secret, worker_env, tmp_path):
    web, url = web_start(worker_env, tmp_path / "web.log", workers=4)
    try:
        event = samples.stripe_event("invoice.paid")
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", **signed_headers("stripe", stripe_secret, body)}
        barrier = threading.Barrier(50)

        def deliver(_):
            barrier.wait(timeout=30)
            return requests.post(f"{url}/webhooks/stripe/", data=body, headers=headers, timeout=30)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(deliver, range(50)))
    finally:
        web.stop()

    assert [r.status_code for r in responses] == [200] * 50
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 49
    assert len({r.json()["event_id"] for r in responses}) == 1
    assert WebhookEvent.objects.filter(idempotency_key=f"stripe:{event['id']}").count() == 1
