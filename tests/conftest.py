import base64
import json
import os
import secrets
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from providers import scheme_get
from webhooks import endpoints, receiving, throttling

# Fixtures that start a process or a server of the test's own: a test using one is `integration`.
PROCESS_FIXTURES = {"test_database_url", "worker_env", "fault_env", "celery_worker_process", "own_redis", "web_url",
                    "browser"}


def pytest_collection_modifyitems(config, items):
    """`pytest -m "not integration"` must start no process: refuse a test that would, unmarked."""
    unmarked = [item.nodeid for item in items
                if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("integration")]
    if unmarked:
        raise pytest.UsageError(f"mark these @pytest.mark.integration (they start processes): {', '.join(unmarked)}")


@pytest.fixture(autouse=True)
def _test_settings(settings):
    # Each test starts with empty endpoint caches (slugs are reused across tests).
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.WEBHOOK_SOURCES_CACHE_SECONDS = 0
    receiving.endpoint_cache_clear()
    throttling.sources_cache_clear()
    throttling.throttled_clients_forget()
    yield
    receiving.endpoint_cache_clear()
    throttling.sources_cache_clear()
    throttling.throttled_clients_forget()


# --- Secrets and endpoints ----------------------------------------------------------------------


@pytest.fixture
def stripe_secret() -> str:
    return f"whsec_{secrets.token_hex(16)}"


@pytest.fixture
def standard_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def ed25519_keys() -> tuple[str, str]:
    """(whsk_ private key for signing in tests, whpk_ public key the endpoint stores)."""
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whsk_" + base64.b64encode(raw_private).decode(), "whpk_" + base64.b64encode(raw_public).decode()


@pytest.fixture
def stripe_endpoint(db, stripe_secret):
    return endpoints.webhook_endpoint_create(slug="stripe", scheme="stripe", secret=stripe_secret)


@pytest.fixture
def standard_endpoint(db, standard_secret):
    return endpoints.webhook_endpoint_create(slug="acme", scheme="standard", secret=standard_secret)


def signed_headers(scheme: str, secret: str, body: bytes, *, event_id: str = "", timestamp: int | None = None) -> dict:
    """Headers as the provider sends them, signed with our scheme's own signer."""
    return scheme_get(scheme).sign(
        secret=secret, body=body, timestamp=int(time.time()) if timestamp is None else timestamp, event_id=event_id
    )


def as_client_headers(headers: dict) -> dict:
    """Django test client spelling: HTTP_STRIPE_SIGNATURE=..."""
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


def post_json(client, url: str, body: bytes, headers: dict):
    return client.generic("POST", url, body, content_type="application/json", **as_client_headers(headers))


@pytest.fixture
def post_stripe(client, stripe_secret):
    """POST a Stripe event dict to /webhooks/stripe/, signed; returns the response."""

    def post(event: dict, *, secret: str | None = None, timestamp: int | None = None, slug: str = "stripe"):
        body = json.dumps(event).encode()
        headers = signed_headers("stripe", secret or stripe_secret, body, timestamp=timestamp)
        return post_json(client, f"/webhooks/{slug}/", body, headers)

    return post


# --- Real services for integration tests -----------------------------------------------------------


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    from django.conf import settings

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


def celery_queue() -> str:
    """This run's Celery queue: each run has its own name (tests/support/provision.py)."""
    from django.conf import settings

    return settings.CELERY_TASK_DEFAULT_QUEUE


@pytest.fixture(scope="session")
def broker_url() -> str:
    return os.environ["CELERY_BROKER_URL"]


@pytest.fixture
def broker_flushed(broker_url):
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def worker_env(test_database_url, broker_url):
    from tests.support.processes import process_env

    return process_env(test_database_url, broker_url, DJANGO_LOG_LEVEL="INFO")


@pytest.fixture
def celery_worker_process(transactional_db, broker_flushed, worker_env, tmp_path):
    """One real Celery worker process (prefork, acks_late, prefetch 1) on the test database."""
    from tests.support.processes import worker_start

    worker = worker_start(worker_env, tmp_path / "worker.log", concurrency=1)
    yield worker
    worker.stop()
