"""/metrics summed over every process: two gunicorn workers and a Celery worker with two pool
processes share one PROMETHEUS_MULTIPROC_DIR, and every scrape, whichever web worker answers it,
counts each delivery exactly once (docs/metrics.md)."""

import json
import socket
import time
from collections import defaultdict
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from fulfillment.services import catalog_import
from providers.stripe import samples
from tests.conftest import signed_headers
from tests.fulfillment.conftest import CATALOG
from tests.support.processes import wait_for, web_start, worker_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CONTRACT_METRICS = {
    "payhook_webhook_events_total": "counter",
    "payhook_webhook_refused_total": "counter",
    "payhook_event_processing_seconds": "histogram",
    "payhook_payment_to_entitlement_seconds": "histogram",
    "payhook_events_backlog": "gauge",
    "payhook_oldest_unprocessed_event_age_seconds": "gauge",
    "payhook_dead_letters_open": "gauge",
    "payhook_task_retries_total": "counter",
    "payhook_replays_total": "counter",
    "payhook_unprovisioned_payments": "gauge",
}
PAYMENTS, OTHERS, DUPLICATES, CONFLICTS, REFUSALS = 12, 12, 5, 3, 2


def _payment(n: int) -> dict:
    event = samples.stripe_trigger_event("checkout.session.completed")
    event["created"] = int(time.time()) - 30
    event["data"]["object"].update(payment_intent=f"pi_metrics_{n:04d}", metadata={"price_id": "price_pro"})
    return event


def _via_either_worker(url: str, send):
    """Linux hands sequential connections to the gunicorn worker that blocked last; a connection
    holding one worker with an unfinished request line sends the request to the other
    (as tests/webhooks/test_throttling.py does)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    blocker = socket.create_connection((host, port), timeout=5)
    try:
        blocker.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.05)
        return send()
    finally:
        blocker.close()


def _post(url: str, secret: str, body: bytes, *, sequence: int) -> requests.Response:
    headers = {"Content-Type": "application/json", "Connection": "close", **signed_headers("stripe", secret, body)}

    def send():
        return requests.post(f"{url}/webhooks/stripe/", data=body, headers=headers, timeout=15)

    return _via_either_worker(url, send) if sequence % 2 else send()


def _scrape(url: str, *, sequence: int) -> tuple[dict, dict]:
    def send():
        return requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=15)

    response = _via_either_worker(url, send) if sequence % 2 else send()
    assert response.status_code == 200
    types, totals = {}, defaultdict(float)
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k in ("outcome", "reason", "le")}
            totals[(sample.name, tuple(sorted(labels.items())))] += sample.value
    return types, totals


def _total(totals: dict, name: str, **labels) -> float:
    return totals.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_scrape_sums_every_web_and_worker_process(stripe_endpoint, stripe_secret, worker_env, broker_flushed, tmp_path):
    catalog_import(data=CATALOG)
    metrics_dir = tmp_path / "prometheus"
    env = {**worker_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "WEBHOOK_DISPATCH_BATCH_SIZE": "2"}
    worker = worker_start(env, tmp_path / "worker.log", concurrency=2)
    web, url = web_start(env, tmp_path / "web.log", workers=2)
    try:
        events = [_payment(n) for n in range(PAYMENTS)] + [samples.stripe_event("customer.created") for _ in range(OTHERS)]
        bodies = [json.dumps(event).encode() for event in events]
        answers = [_post(url, stripe_secret, body, sequence=n) for n, body in enumerate(bodies)]
        answers += [_post(url, stripe_secret, body, sequence=n) for n, body in enumerate(bodies[:DUPLICATES])]
        for n, event in enumerate(events[-CONFLICTS:]):
            changed = json.dumps({**event, "data": {"object": {**event["data"]["object"], "description": "changed"}}}).encode()
            answers.append(_post(url, stripe_secret, changed, sequence=n))
        for n in range(REFUSALS):
            answers.append(_post(url, "whsec_not_the_secret", bodies[n], sequence=n))
        assert sorted(a.status_code for a in answers) == sorted(
            [200] * (PAYMENTS + OTHERS + DUPLICATES) + [409] * CONFLICTS + [400] * REFUSALS
        )

        wait_for(
            lambda: WebhookEvent.objects.filter(status__in=["processed", "ignored"]).count() == PAYMENTS + OTHERS,
            timeout=120, interval=0.5, message="every event processed",
        )
        # The grant's observation follows its commit in the worker: wait until the last one landed.
        wait_for(
            lambda: _total(_scrape(url, sequence=0)[1], "payhook_payment_to_entitlement_seconds_count") == PAYMENTS,
            timeout=30, interval=0.5, message="every payment_to_entitlement observation",
        )
        scrapes = [_scrape(url, sequence=n) for n in range(6)]
    finally:
        web.stop()
        worker.stop()

    accepted = PAYMENTS + OTHERS
    for types, totals in scrapes:
        # The parser names a counter's family without its `_total`.
        assert {name: types.get(name.removesuffix("_total")) for name in CONTRACT_METRICS} == CONTRACT_METRICS
        assert _total(totals, "payhook_webhook_events_total", outcome="accepted") == accepted
        assert _total(totals, "payhook_webhook_events_total", outcome="duplicate") == DUPLICATES
        assert _total(totals, "payhook_webhook_events_total", outcome="conflict") == CONFLICTS
        assert _total(totals, "payhook_webhook_refused_total", reason="invalid_signature") == REFUSALS
        assert _total(totals, "payhook_event_processing_seconds_count") == accepted
        assert _total(totals, "payhook_payment_to_entitlement_seconds_count") == PAYMENTS
        # Paid 30 s before delivery: every observation is above 10 s and within the 300 s SLO.
        assert _total(totals, "payhook_payment_to_entitlement_seconds_bucket", le="10.0") == 0
        assert _total(totals, "payhook_payment_to_entitlement_seconds_bucket", le="300.0") == PAYMENTS
        assert _total(totals, "payhook_payment_to_entitlement_seconds_bucket", le="+Inf") == PAYMENTS
        assert _total(totals, "payhook_events_backlog") == 0
        assert _total(totals, "payhook_dead_letters_open") == 0
        assert _total(totals, "payhook_unprovisioned_payments") == 0
        assert _total(totals, "payhook_task_retries_total") == 0

    # The sums are sums: both web workers stored deliveries, and the worker's pool processes, not
    # the web, observed processing.
    storing = [path for path in metrics_dir.glob("counter_*.db")
               if any(s.value for m in MultiProcessCollector.merge([str(path)]) if m.name == "payhook_webhook_events"
                      for s in m.samples if s.labels.get("outcome") == "accepted")]
    assert len(storing) == 2, storing
    processing = [path for path in metrics_dir.glob("histogram_*.db")
                  if any(m.name == "payhook_event_processing_seconds" and m.samples
                         for m in MultiProcessCollector.merge([str(path)]))]
    assert processing and {p.name.split("_", 1)[1] for p in processing}.isdisjoint({p.name.split("_", 1)[1] for p in storing})
