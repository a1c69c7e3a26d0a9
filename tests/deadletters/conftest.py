import base64
import json

import pytest
from rest_framework.test import APIClient

from tests.accounts.factories import token_key_for
from tests.conftest import celery_queue
from tests.deadletters.factories import staff_user_create
from webhooks import deadletters


@pytest.fixture
def operator(db):
    return staff_user_create("olivia-operator", "operators")


@pytest.fixture
def support_user(db):
    return staff_user_create("sam-support", "support")


@pytest.fixture
def services_user(db):
    return staff_user_create("svc-billing", "services")


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_key_for(user)}")
    return client


@pytest.fixture
def audit_calls(monkeypatch):
    """Every audit entry the dead-letter code appends (the real audit app still receives them)."""
    calls: list[dict] = []
    single, bulk = deadletters.audit_entry_append, deadletters.audit_entries_append

    def append(**entry):
        calls.append(entry)
        return single(**entry)

    def append_many(*, entries, **kwargs):
        calls.extend(entries)
        return bulk(entries=entries, **kwargs)

    monkeypatch.setattr(deadletters, "audit_entry_append", append)
    monkeypatch.setattr(deadletters, "audit_entries_append", append_many)
    return calls


@pytest.fixture
def queued(broker_flushed):
    """Reads the Celery messages waiting on this run's queue: [(task name, args), ...]."""

    def read() -> list[tuple[str, list]]:
        messages = []
        for raw in reversed(broker_flushed.lrange(celery_queue(), 0, -1)):
            message = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            messages.append((message["headers"]["task"], args))
        return messages

    return read
