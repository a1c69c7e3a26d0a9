import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from config.permissions import OPERATORS, SERVICES, SUPPORT
from tests.accounts.factories import token_key_for


def _token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_key_for(user)}")
    return client


def _member(username: str, group: str | None = None, **extra) -> User:
    user = User.objects.create_user(username=username, password="unused-password-1", **extra)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def support_client(db):
    return _token_client(_member("support-1", SUPPORT))


@pytest.fixture
def operator_client(db):
    return _token_client(_member("operator-1", OPERATORS))


@pytest.fixture
def services_client(db):
    return _token_client(_member("service-1", SERVICES))


@pytest.fixture
def superuser_client(db):
    return _token_client(_member("root-1", is_superuser=True, is_staff=True))
