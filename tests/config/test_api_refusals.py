"""Authenticated requests that were 500s on /api/ (issue 8): each is now a 4xx with a JSON code."""

import uuid

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from tests.accounts.factories import token_key_for
from tests.webhooks.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db

TAMPERED_CURSOR = "cD1ub3RhZGF0ZQ=="  # base64 of "p=notadate"
LIST_URLS = ["/api/v1/events/", "/api/v1/dead-letters/", "/api/v1/notifications/", "/api/v1/audit/"]


@pytest.fixture
def staff(settings) -> APIClient:
    settings.DEBUG = True  # as `make run` had it: a 500 would have been Django's technical page
    user = User.objects.create_user(username=f"staff-{uuid.uuid4().hex[:8]}")
    user.groups.add(*Group.objects.all())
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_key_for(user)}")
    return client


def _error(response) -> tuple[int, str]:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize("url", LIST_URLS)
@pytest.mark.parametrize("cursor", [TAMPERED_CURSOR, "garbage"])
def test_a_tampered_cursor_is_a_400_invalid_cursor(staff, url, cursor):
    WebhookEventFactory.create_batch(2)

    assert _error(staff.get(url, {"cursor": cursor})) == (400, "invalid_cursor")


@pytest.mark.parametrize("url", ["/api/v1/entitlements/?user=9223372036854775808", "/api/v1/notifications/?user=9223372036854775808"])
def test_an_integer_past_bigint_is_a_400(staff, url):
    assert _error(staff.get(url))[0] == 400


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0001-01-01T00:00:00+01:00", (400, "invalid_parameter")),  # year 0 in UTC
        ("9999-12-31T23:59:59-01:00", (400, "invalid_parameter")),  # year 10000 in UTC
        ("0001-01-01T00:00:00-23:59", (200, None)),  # PostgreSQL refuses offsets past ±15:59
        ("2026-01-01T00:00:00+14:00", (200, None)),
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/events/", "/api/v1/dead-letters/", "/api/v1/audit/"])
@pytest.mark.parametrize("name", ["since", "until"])
def test_a_datetime_at_the_calendars_edge_is_a_400_or_an_answer_never_a_500(staff, url, name, value, expected):
    WebhookEventFactory.create_batch(2)

    response = staff.get(url, {name: value})

    assert response["Content-Type"].startswith("application/json")
    assert (response.status_code, response.json().get("error") if response.status_code != 200 else None) == expected


def test_a_preferences_put_nested_1000_deep_is_a_400_parse_error(staff):
    user = User.objects.create_user(username="nested")
    body = b'{"preferences": ' + b"[" * 1000 + b"]" * 1000 + b"}"

    response = staff.generic("PUT", f"/api/v1/users/{user.pk}/notification-preferences/", body, content_type="application/json")

    assert _error(response) == (400, "parse_error")


def test_a_preferences_put_with_duplicate_keys_is_a_400_parse_error(staff):
    user = User.objects.create_user(username="dupe")
    body = b'{"preferences": {"access": {"email": true}}, "preferences": {}}'

    response = staff.generic("PUT", f"/api/v1/users/{user.pk}/notification-preferences/", body, content_type="application/json")

    assert _error(response) == (400, "parse_error")


@pytest.mark.parametrize(
    "url", ["/api/v1/events/00000000-0000-0000-0000-000000000000/", "/api/v1/events/not-a-uuid/", "/api/v1/dead-letters/999999/"]
)
def test_a_missing_object_is_a_404_not_found(staff, url):
    assert _error(staff.get(url)) == (404, "not_found")


def test_a_missing_route_under_api_is_a_json_404_even_under_debug(staff):
    assert _error(staff.get("/api/v1/no-such-thing/")) == (404, "not_found")
