"""Per-endpoint IP allowlists: a delivery from elsewhere is 403 forbidden_source, nothing stored."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from prometheus_client import REGISTRY

from config.client_address import client_address
from providers.stripe import samples
from tests.conftest import as_client_headers, signed_headers
from webhooks import throttling
from webhooks.models import WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db

STRIPE_NET = "203.0.113.0/24"


@pytest.fixture(autouse=True)
def _fresh_source_cache():
    throttling.sources_cache_clear()
    yield
    throttling.sources_cache_clear()


@pytest.fixture
def guarded(stripe_endpoint):
    stripe_endpoint.allowed_sources = [STRIPE_NET, "2001:db8::/32"]
    stripe_endpoint.save()
    return stripe_endpoint


def _post(client, secret: str | None, *, address: str, forwarded_for: str | None = None):
    body = json.dumps(samples.stripe_event("invoice.paid")).encode()
    headers = as_client_headers(signed_headers("stripe", secret, body)) if secret else {}
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client.generic("POST", "/webhooks/stripe/", body, content_type="application/json", REMOTE_ADDR=address, **headers)


def _refused_total(reason: str) -> float:
    return REGISTRY.get_sample_value("payhook_webhook_refused_total", {"endpoint": "stripe", "reason": reason}) or 0.0


def test_a_delivery_from_outside_the_allowlist_is_403_and_stores_nothing(guarded, stripe_secret, client):
    before = _refused_total("forbidden_source")

    response = _post(client, stripe_secret, address="198.51.100.7")

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden_source"}
    assert WebhookEvent.objects.count() == 0
    assert _refused_total("forbidden_source") == before + 1


def test_the_source_is_checked_before_the_signature(guarded, client):
    assert _post(client, None, address="198.51.100.7").json() == {"error": "forbidden_source"}
    assert _post(client, None, address="203.0.113.9").json() == {"error": "missing_signature"}


@pytest.mark.parametrize("address", ["203.0.113.9", "2001:db8::1", "::ffff:203.0.113.9"])
def test_a_delivery_from_an_allowlisted_address_is_accepted(guarded, stripe_secret, client, address):
    response = _post(client, stripe_secret, address=address)

    assert response.status_code == 200
    assert response.json()["status"] == "accepted"


def test_an_endpoint_without_an_allowlist_accepts_any_address(stripe_endpoint, stripe_secret, client):
    assert _post(client, stripe_secret, address="198.51.100.7").status_code == 200


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(guarded, stripe_secret, client, settings):
    spoofed = _post(client, stripe_secret, address="198.51.100.7", forwarded_for="203.0.113.9")
    settings.WEBHOOK_TRUSTED_PROXIES = ["198.51.100.0/24"]
    proxied = _post(client, stripe_secret, address="198.51.100.7", forwarded_for="203.0.113.9")

    assert spoofed.status_code == 403
    assert proxied.status_code == 200


def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client(guarded, stripe_secret, client, settings):
    settings.WEBHOOK_TRUSTED_PROXIES = ["10.0.0.0/8"]

    # The client wrote the left entry itself; the proxy appended the address it saw.
    assert _post(client, stripe_secret, address="10.0.0.2", forwarded_for="203.0.113.9, 198.51.100.7").status_code == 403
    # Two proxies deep: both hops are skipped.
    assert _post(client, stripe_secret, address="10.0.0.2", forwarded_for="203.0.113.9, 10.1.2.3").status_code == 200


@pytest.mark.parametrize(
    "meta, proxies, expected",
    [
        ({"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}, [], "198.51.100.7"),
        ({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}, ["10.0.0.0/8"], "203.0.113.9"),
        ({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "1.2.3.4, garbage, 10.0.0.9"}, ["10.0.0.0/8"], "10.0.0.9"),
        ({"REMOTE_ADDR": "10.0.0.2"}, ["10.0.0.0/8"], "10.0.0.2"),
        ({"REMOTE_ADDR": "::ffff:192.0.2.1"}, [], "192.0.2.1"),
        ({}, [], ""),
    ],
)
def test_client_address(meta, proxies, expected, settings):
    settings.WEBHOOK_TRUSTED_PROXIES = proxies
    assert client_address(meta) == expected


def _run(*args) -> str:
    out = StringIO()
    call_command("webhook_endpoint", *args, stdout=out)
    return out.getvalue()


def test_create_takes_a_mode_and_repeatable_allow_ip(stripe_secret):
    _run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret, "--mode", "test",
         "--allow-ip", "203.0.113.0/24", "--allow-ip", "198.51.100.7", "--allow-ip", "2001:db8::/32")

    endpoint = WebhookEndpoint.objects.get(slug="shop")
    assert endpoint.mode == "test"
    assert endpoint.allowed_sources == ["203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32"]


def test_create_defaults_to_live_and_any_address(stripe_secret):
    _run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)

    endpoint = WebhookEndpoint.objects.get(slug="shop")
    assert (endpoint.mode, endpoint.allowed_sources) == ("live", [])


def test_an_invalid_cidr_is_a_one_line_error_and_creates_nothing(stripe_secret):
    with pytest.raises(CommandError) as excinfo:
        _run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret, "--allow-ip", "203.0.113.0/33")

    assert "not an IP network" in str(excinfo.value)
    assert "\n" not in str(excinfo.value).strip()
    assert not WebhookEndpoint.objects.filter(slug="shop").exists()


def test_set_sources_replaces_the_allowlist_and_takes_effect(guarded, stripe_secret, client):
    assert _post(client, stripe_secret, address="198.51.100.7").status_code == 403

    output = _run("set-sources", "stripe", "--allow-ip", "198.51.100.0/24")
    assert "198.51.100.0/24" in output
    assert _post(client, stripe_secret, address="198.51.100.7").status_code == 200
    assert _post(client, stripe_secret, address="203.0.113.9").status_code == 403

    assert "any address" in _run("set-sources", "stripe")
    assert WebhookEndpoint.objects.get(slug="stripe").allowed_sources == []
    assert _post(client, stripe_secret, address="203.0.113.9").status_code == 200


def test_the_service_refuses_an_unknown_mode(stripe_secret):
    from webhooks.endpoints import webhook_endpoint_create
    from webhooks.exceptions import WebhookError

    with pytest.raises(WebhookError):
        webhook_endpoint_create(slug="shop", scheme="stripe", secret=stripe_secret, mode="sandbox")
    assert not WebhookEndpoint.objects.filter(slug="shop").exists()
