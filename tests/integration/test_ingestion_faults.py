"""Ingestion when the broker or the database is down: real gunicorn, Redis, PostgreSQL and Celery processes."""

import json
import secrets
import subprocess
import time
from io import StringIO

import pytest
import redis
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command

from providers.stripe import samples
from tests.conftest import signed_headers
from tests.support.processes import free_port, process_env, wait_for, web_start, worker_start
from tests.support.tcp_proxy import TcpProxy
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PRICE_ID = "price_fault_pro"


class RedisServer:
    """A redis-server of this test's own, on a fixed port, that the test can kill and start again."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10, message="redis-server to answer")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        assert not self._answers()

    def _answers(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
        except redis.RedisError:
            return False


@pytest.fixture
def own_redis():
    server = RedisServer()
    server.start()
    yield server
    server.kill()


def _post(url: str, slug: str, secret: str, event: dict) -> requests.Response:
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", **signed_headers("stripe", secret, body)}
    return requests.post(f"{url}/webhooks/{slug}/", data=body, headers=headers, timeout=30)


def _status(event_id: str) -> str | None:
    return WebhookEvent.objects.filter(id=event_id).values_list("status", flat=True).first()


def _paid_checkout_session(user_id: int) -> dict:
    """checkout.session.completed for a catalog price and a known user: an event fulfilment processes."""
    session = samples.stripe_object("checkout.session")
    session.update(
        id=f"cs_test_{secrets.token_hex(8)}",
        mode="payment",
        client_reference_id=str(user_id),
        payment_intent=f"pi_test_{secrets.token_hex(8)}",
        payment_status="paid",
        status="complete",
        metadata={"price_id": PRICE_ID},
    )
    return samples.stripe_event("checkout.session.completed", session)


def test_with_the_broker_down_a_post_is_accepted_and_processed_once_the_broker_is_back(
    stripe_endpoint, stripe_secret, test_database_url, own_redis, tmp_path
):
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"products": [{"provider": "stripe", "price_id": PRICE_ID, "entitlements": ["pro"]}]}))
    call_command("import_catalog", str(catalog), stdout=StringIO())
    buyer = get_user_model().objects.create_user("buyer", email="buyer@example.com")
    env = process_env(test_database_url, own_redis.url)
    web, url = web_start(env, tmp_path / "web.log")
    try:
        own_redis.kill()

        started = time.monotonic()
        response = _post(url, "stripe", stripe_secret, _paid_checkout_session(buyer.id))
        answered_in = time.monotonic() - started

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"
        event_id = response.json()["event_id"]
        assert answered_in < 5, "the provider must not wait for the broker"
        assert _status(event_id) == "received"
    finally:
        # The stored row is all that is left: the web process never talks to the broker.
        web.stop()
    assert _status(event_id) == "received"

    own_redis.start()
    worker_env = {**env, "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1", "WEBHOOK_REDISPATCH_AFTER_SECONDS": "1"}
    worker = worker_start(worker_env, tmp_path / "worker.log", beat=True)
    try:
        wait_for(lambda: _status(event_id) in {"processed", "ignored", "failed", "dead"}, timeout=60, message="the relay")
    finally:
        worker.stop()

    event = WebhookEvent.objects.get(id=event_id)
    assert event.status == "processed", (event.status, event.last_error)
    assert event.dispatched_at is not None


def test_with_the_database_unreachable_a_post_answers_503_and_ingestion_recovers(
    stripe_endpoint, stripe_secret, test_database_url, broker_url, broker_flushed, tmp_path
):
    proxy, proxied_url = TcpProxy.for_url(test_database_url)
    env = process_env(proxied_url, broker_url, DATABASE_CONNECT_TIMEOUT="2")
    web, url = web_start(env, tmp_path / "web.log")
    held_back = samples.stripe_event("invoice.paid")
    try:
        # Warms the process: a live database connection and the endpoint's keys in its cache.
        before = _post(url, "stripe", stripe_secret, samples.stripe_event("invoice.paid"))
        proxy.cut()

        during = [_post(url, "stripe", stripe_secret, held_back) for _ in range(3)]

        proxy.restore()
        after = _post(url, "stripe", stripe_secret, samples.stripe_event("invoice.paid"))
        retried = _post(url, "stripe", stripe_secret, held_back)
    finally:
        web.stop()
        proxy.close()

    assert before.status_code == 200 and before.json()["status"] == "accepted"
    for response in during:
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "unavailable"}
    assert after.status_code == 200 and after.json()["status"] == "accepted"
    assert retried.status_code == 200 and retried.json()["status"] == "accepted"
    assert WebhookEvent.objects.count() == 3
    assert WebhookEvent.objects.filter(provider_event_id=held_back["id"]).count() == 1
    assert stripe_secret not in web.log()
