"""Rate limits on /webhooks/: refusals per client address, requests per endpoint, counted in the shared cache."""

import json
import secrets
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from providers.stripe import samples
from tests.conftest import as_client_headers, signed_headers
from webhooks import throttling
from webhooks.models import WebhookEvent

# Half a minute into a window: a test never straddles two windows, and Retry-After is known.
NOW = 1_800_000_030.0


@pytest.fixture(autouse=True)
def isolated_counters(settings, monkeypatch):
    """Counters of this test only: a fresh key prefix in the real (Redis) cache, an empty source cache."""
    monkeypatch.setattr(throttling, "_clock", lambda: NOW)
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{secrets.token_hex(6)}"}}
    throttling.sources_cache_clear()
    yield
    throttling.sources_cache_clear()


def _signed(secret: str, event: dict | None = None) -> tuple[bytes, dict]:
    body = json.dumps(event or samples.stripe_event("invoice.paid")).encode()
    return body, as_client_headers(signed_headers("stripe", secret, body))


def _post(client, slug: str, body: bytes = b"{}", headers: dict | None = None, address: str = "198.51.100.7"):
    return client.generic(
        "POST", f"/webhooks/{slug}/", body, content_type="application/json", REMOTE_ADDR=address, **(headers or {})
    )


def _refused_total(endpoint: str, reason: str) -> float:
    return REGISTRY.get_sample_value("payhook_webhook_refused_total", {"endpoint": endpoint, "reason": reason}) or 0.0


@pytest.mark.parametrize(
    "value, expected", [("600/m", (600, 60)), ("10/5s", (10, 5)), ("1/hour", (1, 3600)), ("", None), (" ", None)]
)
def test_a_rate_is_a_count_per_period(value, expected):
    assert throttling.rate_parse(value) == expected


def test_a_malformed_rate_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured):
        throttling.rate_parse("lots")


def test_the_test_run_starts_with_client_throttling_off_and_production_defaults_are_documented(settings):
    assert settings.WEBHOOK_RATE_LIMIT_PER_ENDPOINT == ""
    example = (settings.BASE_DIR / ".env.example").read_text()
    assert "WEBHOOK_RATE_LIMIT_PER_CLIENT=60/m" in example


def test_a_client_past_its_refusal_limit_gets_429_with_retry_after(db, client, settings):
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "3/m"
    before = _refused_total("", "rate_limited")

    statuses = [_post(client, "no-such-endpoint").status_code for _ in range(3)]
    throttled = _post(client, "no-such-endpoint")

    assert statuses == [404, 404, 404]
    assert throttled.status_code == 429
    assert throttled.json() == {"error": "rate_limited"}
    assert throttled["Retry-After"] == "30"
    # An attacker-chosen slug never becomes a metric label.
    assert _refused_total("", "rate_limited") == before + 1


def test_a_throttled_client_is_refused_even_a_valid_delivery_but_others_are_not(stripe_endpoint, stripe_secret, client, settings):
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "2/m"
    for _ in range(2):
        assert _post(client, "stripe", b"{}", as_client_headers({"Stripe-Signature": "t=1,v1=00"})).status_code == 400

    body, headers = _signed(stripe_secret)
    assert _post(client, "stripe", body, headers).status_code == 429
    assert _post(client, "stripe", body, headers, address="203.0.113.50").status_code == 200
    assert WebhookEvent.objects.count() == 1


def test_verified_deliveries_never_count_against_the_client(stripe_endpoint, stripe_secret, client, settings):
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "2/m"

    statuses = [_post(client, "stripe", *_signed(stripe_secret)).status_code for _ in range(5)]

    assert statuses == [200] * 5


def test_an_allowlisted_client_is_not_throttled_for_its_refusals_on_that_endpoint(
    stripe_endpoint, stripe_secret, client, settings
):
    stripe_endpoint.allowed_sources = ["198.51.100.0/24"]
    stripe_endpoint.save()
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "2/m"
    for _ in range(3):
        _post(client, "stripe", b"{}", as_client_headers({"Stripe-Signature": "t=1,v1=00"}))

    assert _post(client, "no-such-endpoint").status_code == 429
    assert _post(client, "stripe", *_signed(stripe_secret)).status_code == 200


def test_the_endpoint_limit_counts_every_request_and_stores_nothing_past_it(stripe_endpoint, stripe_secret, client, settings):
    settings.WEBHOOK_RATE_LIMIT_PER_ENDPOINT = "2/m"
    before = _refused_total("stripe", "rate_limited")

    responses = [_post(client, "stripe", *_signed(stripe_secret), address=f"203.0.113.{i}") for i in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[2].json() == {"error": "rate_limited"}
    assert responses[2]["Retry-After"] == "30"
    assert WebhookEvent.objects.count() == 2
    assert _refused_total("stripe", "rate_limited") == before + 1


def test_counters_live_in_the_shared_cache_not_in_the_process(db, settings):
    """Two clients, and a fresh cache connection in between, as another web process would have."""
    from django.core.cache import caches

    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "4/m"
    first, second = Client(), Client()
    for _ in range(2):
        assert _post(first, "nope").status_code == 404
    caches["default"].close()
    del caches["default"]  # the next use opens a new connection to the same Redis
    for _ in range(2):
        assert _post(second, "nope").status_code == 404

    assert _post(first, "nope").status_code == 429
    assert _post(second, "nope").status_code == 429


def test_unknown_slugs_cost_no_database_query_after_the_first(db, client, settings):
    settings.WEBHOOK_SOURCES_CACHE_SECONDS = 5
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "1000/m"
    assert _post(client, "made-up").status_code == 404

    with CaptureQueriesContext(connection) as queries:
        statuses = [_post(client, "made-up").status_code for _ in range(20)]

    assert statuses == [404] * 20
    assert len(queries) == 0


def test_a_throttled_client_costs_no_database_query_even_for_new_slugs(db, client, settings):
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "1/m"
    _post(client, "first")

    with CaptureQueriesContext(connection) as queries:
        statuses = [_post(client, f"slug-{i}").status_code for i in range(5)]

    assert statuses == [429] * 5
    assert len(queries) == 0


def test_an_unavailable_cache_never_refuses_a_delivery(stripe_endpoint, stripe_secret, client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "1/m"
    settings.WEBHOOK_RATE_LIMIT_PER_ENDPOINT = "1/m"

    assert _post(client, "nope").status_code == 404
    assert _post(client, "nope").status_code == 404
    assert [_post(client, "stripe", *_signed(stripe_secret)).status_code for _ in range(2)] == [200, 200]


@pytest.mark.integration
@pytest.mark.parametrize("cache", ["redis", "file"])
def test_the_limits_hold_across_gunicorn_workers(cache, transactional_db, stripe_secret, worker_env, broker_flushed, tmp_path):
    """Two gunicorn workers, one counter: once the limit is spent, both workers answer 429 — also one
    that granted fewer than the limit itself. `file` is the embedded default of `make run` (no Redis)."""
    from tests.support.processes import web_start
    from webhooks.endpoints import webhook_endpoint_create

    webhook_endpoint_create(slug="stripe", scheme="stripe", secret=stripe_secret)
    access_log = tmp_path / "access.log"
    env = {
        **worker_env,
        # Windows are aligned to the epoch: a long one, so the test never straddles two.
        "WEBHOOK_RATE_LIMIT_PER_ENDPOINT": "5/1000d",
        "WEBHOOK_RATE_LIMIT_PER_CLIENT": "5/1000d",
        "GUNICORN_ACCESS_LOG": str(access_log),
        "GUNICORN_CMD_ARGS": "--access-logformat='%(p)s %(s)s %(U)s'",
    }
    if cache == "file":
        env["CACHE_URL"] = f"filecache://{tmp_path / 'cache'}"
    web, url = web_start(env, tmp_path / "web.log", workers=2)
    try:
        deliveries = _until_both_workers_throttle(lambda: _post_live(url, "stripe", stripe_secret), access_log, url)
        refusals = _until_both_workers_throttle(
            lambda: requests.post(f"{url}/webhooks/nope/", data=b"{}", timeout=10, headers={"Connection": "close"}).status_code,
            access_log,
            url,
        )
    finally:
        web.stop()

    assert [status for _, status in deliveries[:5]] == [200] * 5
    assert {status for _, status in deliveries[5:]} == {429}
    assert [status for _, status in refusals[:5]] == [404] * 5
    assert {status for _, status in refusals[5:]} == {429}
    assert WebhookEvent.objects.count() == 5


def _post_live(url: str, slug: str, secret: str) -> int:
    body = json.dumps(samples.stripe_event("invoice.paid")).encode()
    headers = {"Content-Type": "application/json", "Connection": "close", **signed_headers("stripe", secret, body)}
    return requests.post(f"{url}/webhooks/{slug}/", data=body, timeout=10, headers=headers).status_code


def _until_both_workers_throttle(send, access_log, url: str, *, most: int = 80) -> list[tuple[str, int]]:
    """Send one request at a time until each of the two workers has answered 429; (worker, status) each.

    Linux wakes the worker that blocked in accept() last, so an idle, fast worker can take every
    sequential request. Every other request, a second connection first occupies one worker with an
    unfinished request line (it waits to read the rest), so the request goes to the other worker.
    """
    start, answered = len(_webhook_lines(access_log)), []
    host, port = urlsplit(url).hostname, urlsplit(url).port
    for sent in range(most):
        blocker = None
        if sent % 2:
            blocker = socket.create_connection((host, port), timeout=5)
            blocker.sendall(b"GET /healthz HTTP/1.1\r\n")  # no end of headers: its worker keeps reading
            time.sleep(0.05)  # accepted before the request below connects
        try:
            status = send()
        finally:
            if blocker is not None:
                blocker.close()  # never a complete request: no access-log line
        deadline = time.monotonic() + 5  # gunicorn logs the request after responding
        while len(lines := _webhook_lines(access_log)) < start + len(answered) + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        answered.append((lines[start + len(answered)].split()[0], status))
        if len({pid for pid, code in answered if code == 429}) == 2:
            return answered
    raise AssertionError(f"both workers never answered 429: {answered}")


def _webhook_lines(path) -> list[str]:
    """The access log's messages (JSON lines, config/gunicorn.py) about webhook requests."""
    text = path.read_text() if path.exists() else ""
    # Complete lines only: gunicorn may be writing the next one.
    messages = [json.loads(line)["event"] for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]
    return [message for message in messages if " /webhooks/" in message]
