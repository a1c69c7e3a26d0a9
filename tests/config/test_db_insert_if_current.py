"""config.db.row_insert_keyed_if_current: the event and its key row in one guarded statement on
PostgreSQL, read-then-insert elsewhere; a duplicate is answered with the stored key row."""

import pytest
from django.db import connection
from django.utils import timezone

from config.db import row_insert_keyed_if_current
from webhooks.models import EventKey, WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["postgresql", "fallback"])
def vendor(request, monkeypatch):
    if request.param == "fallback":
        # The branch SQLite takes (no INSERT inside WITH), run here against PostgreSQL.
        monkeypatch.setattr(connection, "vendor", "sqlite")
    return request.param


def _event(endpoint, key: str, content_hash: str = "h") -> WebhookEvent:
    return WebhookEvent(
        endpoint=endpoint, idempotency_key=key, provider_event_id=key, content_hash=content_hash,
        body_encrypted=b"b", headers_encrypted=b"h", received_at=timezone.now(),
    )


def _insert(event, endpoint_id, version):
    key = EventKey(idempotency_key=event.idempotency_key, event_id=event.id, content_hash=event.content_hash,
                   received_at=event.received_at)
    return row_insert_keyed_if_current(
        event, key=key, owner=WebhookEndpoint, owner_id=endpoint_id,
        version_field="secrets_version", version=version, live_field="is_active",
    )


def test_inserts_both_when_the_version_is_current(vendor):
    endpoint = WebhookEndpoint.objects.create(slug="e", scheme="stripe", secrets_version=3)
    event = _event(endpoint, "e:1")

    assert _insert(event, endpoint.pk, 3) == (event.id, 3, None)
    assert WebhookEvent.objects.filter(pk=event.id).exists()
    assert EventKey.objects.filter(pk="e:1", event_id=event.id).exists()


def test_a_taken_key_inserts_nothing_and_returns_the_stored_key(vendor):
    endpoint = WebhookEndpoint.objects.create(slug="e", scheme="stripe", secrets_version=3)
    first = _event(endpoint, "e:1")
    _insert(first, endpoint.pk, 3)

    pk, current, stored = _insert(_event(endpoint, "e:1", "other"), endpoint.pk, 3)

    assert (pk, current) == (None, 3)
    assert (stored.idempotency_key, stored.event_id, stored.content_hash) == ("e:1", first.id, "h")
    assert WebhookEvent.objects.count() == 1 and EventKey.objects.count() == 1


def test_a_stale_version_inserts_nothing_and_reports_the_current_one(vendor):
    endpoint = WebhookEndpoint.objects.create(slug="e", scheme="stripe", secrets_version=4)

    assert _insert(_event(endpoint, "e:1"), endpoint.pk, 3)[:2] == (None, 4)
    assert not WebhookEvent.objects.exists() and not EventKey.objects.exists()


def test_an_inactive_or_missing_owner_inserts_nothing(vendor):
    endpoint = WebhookEndpoint.objects.create(slug="e", scheme="stripe", is_active=False)

    assert _insert(_event(endpoint, "e:1"), endpoint.pk, 0)[:2] == (None, None)
    assert _insert(_event(endpoint, "e:2"), endpoint.pk + 1000, 0)[:2] == (None, None)
    assert not WebhookEvent.objects.exists() and not EventKey.objects.exists()
