import pytest
from rest_framework.test import APIClient

from notifications import services as notification_services
from tests.accounts.factories import token_key_for
from tests.notifications.factories import UserFactory


@pytest.fixture
def audit_calls(monkeypatch):
    """Every audit_entry_append call notifications makes, passed through to the real audit service."""
    calls = []

    def spy(**kwargs):
        from audit.services import audit_entry_append

        calls.append(kwargs)
        return audit_entry_append(**kwargs)

    monkeypatch.setattr(notification_services, "audit_entry_append", spy)
    return calls


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def operator(db):
    return UserFactory(groups=["operators"])


@pytest.fixture
def support(db):
    return UserFactory(groups=["support"])


@pytest.fixture
def api_client_for(db):
    """An APIClient authenticated with a real DRF token, as other programs call the API."""

    def client_for(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {token_key_for(user)}")
        return client

    return client_for
