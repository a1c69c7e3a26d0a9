from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.tokens import token_key_digest

URL = "/api/v1/entitlements/?user=1"

pytestmark = pytest.mark.django_db


@pytest.fixture
def service():
    user = User.objects.create_user("svc-billing")
    user.groups.add(Group.objects.get(name="services"))
    return user


def _create_token(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("drf_create_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def _get(key: str):
    return APIClient().get(URL, HTTP_AUTHORIZATION=f"Token {key}")


def test_drf_create_token_prints_a_key_once_and_stores_only_its_digest(service):
    key, note = _create_token("svc-billing")

    token = ApiToken.objects.get(user=service)
    assert len(key) == 40 and token.digest == token_key_digest(key) and key not in token.digest
    assert token.prefix == key[:8] and token.prefix in note and key not in note
    assert timedelta(days=89) < token.expires_at - timezone.now() <= timedelta(days=90)
    assert _get(key).status_code == 200
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None
    # Nowhere in the database in clear.
    with connection.cursor() as cursor:
        cursor.execute("SELECT prefix, digest FROM accounts_apitoken")
        assert all(key not in value for row in cursor.fetchall() for value in row)


def test_expires_in_sets_the_lifetime_and_an_expired_key_is_refused(service, time_machine):
    key, _ = _create_token("svc-billing", "--expires-in", "2h")
    assert _get(key).status_code == 200

    time_machine.move_to(timezone.now() + timedelta(hours=2, seconds=1))
    response = _get(key)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


@pytest.mark.parametrize("value", ["0d", "-1d", "ninety", "90y"])
def test_a_bad_lifetime_is_refused(service, value):
    with pytest.raises(CommandError, match="expires-in"):
        _create_token("svc-billing", "--expires-in", value)
    assert not ApiToken.objects.exists()


def test_an_unknown_user_is_refused(db):
    with pytest.raises(CommandError, match="no user named"):
        _create_token("nobody")


def test_an_unknown_key_and_a_deleted_token_are_401(service):
    key, _ = _create_token("svc-billing")
    assert _get("0" * 40).status_code == 401
    ApiToken.objects.filter(user=service).delete()
    assert _get(key).status_code == 401


def test_the_admin_lists_tokens_by_prefix_owner_and_expiry_never_the_key(client, service):
    key, _ = _create_token("svc-billing")
    client.force_login(User.objects.create_superuser("root"))

    listing = client.get("/admin/accounts/apitoken/").content.decode()
    token = ApiToken.objects.get(user=service)
    detail = client.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()

    assert token.prefix in listing and "svc-billing" in listing
    assert key not in listing and key not in detail and token.digest not in detail
    assert client.get("/admin/accounts/apitoken/add/").status_code == 403
