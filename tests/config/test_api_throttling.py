import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from tests.accounts.factories import token_key_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(monkeypatch):
    """Small API rates for this test (the suite runs with them off: pyproject's env)."""
    cache.clear()

    def set_rates(user=None, anon=None):
        monkeypatch.setattr("rest_framework.throttling.SimpleRateThrottle.THROTTLE_RATES", {"user": user, "anon": anon})

    yield set_rates
    cache.clear()


def _client_for(group: str | None) -> APIClient:
    client = APIClient()
    if group:
        user = User.objects.create_user(f"{group}-member")
        user.groups.add(Group.objects.get(name=group))
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_key_for(user)}")
    return client


def test_the_defaults_are_generous_and_read_from_the_environment():
    # pyproject's env turns them off for the suite; settings.py documents the production defaults.
    assert api_settings.DEFAULT_THROTTLE_CLASSES  # the API is throttled at all
    from config import settings as project_settings

    source = open(project_settings.__file__).read()
    assert 'env.str("API_THROTTLE_USER", default="1000/min")' in source
    assert 'env.str("API_THROTTLE_ANON", default="60/min")' in source


def test_an_account_past_its_rate_gets_429_with_retry_after(rates):
    rates(user="3/min", anon=None)
    client = _client_for("services")

    statuses = [client.get("/api/v1/entitlements/", {"user": 1}).status_code for _ in range(3)]
    throttled = client.get("/api/v1/entitlements/", {"user": 1})

    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    body = throttled.json()
    assert body["error"] == "throttled" and body["retry_after"] == int(throttled["Retry-After"])
    # Another account has its own budget.
    assert _client_for("operators").get("/api/v1/entitlements/", {"user": 1}).status_code == 200


def test_anonymous_requests_are_counted_per_address(rates, settings):
    rates(user=None, anon="2/min")
    client = APIClient()
    assert [client.get("/api/v1/events/").status_code for _ in range(2)] == [401, 401]
    throttled = client.get("/api/v1/events/")
    assert throttled.status_code == 429 and throttled.json()["error"] == "throttled"
    assert client.get("/api/v1/events/", REMOTE_ADDR="203.0.113.7").status_code == 401


def test_a_forged_forwarded_for_does_not_buy_a_new_budget(rates, settings):
    settings.WEBHOOK_TRUSTED_PROXIES = []  # nobody is trusted: X-Forwarded-For is the client's own text
    rates(user=None, anon="2/min")
    client = APIClient()
    for n in range(2):
        client.get("/api/v1/events/", headers={"X-Forwarded-For": f"198.51.100.{n}"})
    assert client.get("/api/v1/events/", headers={"X-Forwarded-For": "198.51.100.99"}).status_code == 429
