"""What an endpoint accepts (active, mode, source networks) changes only through an audited service."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from audit.models import AuditEntry
from webhooks.endpoints import webhook_endpoint_update
from webhooks.models import EndpointSecret, WebhookEndpoint

pytestmark = pytest.mark.django_db


def _form(endpoint, **extra) -> dict:
    rows = list(EndpointSecret.objects.filter(endpoint=endpoint).order_by("created_at"))
    data = {
        "slug": endpoint.slug, "scheme": endpoint.scheme, "description": endpoint.description, "is_active": "on",
        "mode": endpoint.mode, "allowed_sources": json.dumps(endpoint.allowed_sources), "new_secret": "",
        "expire_others_in": "", "secrets-TOTAL_FORMS": str(len(rows)), "secrets-INITIAL_FORMS": str(len(rows)),
        "secrets-MIN_NUM_FORMS": "0", "secrets-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        data[f"secrets-{index}-id"] = str(row.pk)
        data[f"secrets-{index}-endpoint"] = str(endpoint.pk)
    data.update(extra)
    return data


def _changes() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action="endpoint.changed").order_by("id"))


def test_an_admin_edit_of_mode_active_and_sources_is_one_audit_entry_without_addresses(client, stripe_endpoint):
    root = get_user_model().objects.create_superuser("root", "root@example.invalid", "pw")
    client.force_login(root)
    form = _form(stripe_endpoint, mode="test", allowed_sources='["10.1.2.3", "192.0.2.0/24"]')
    del form["is_active"]  # an unticked checkbox

    response = client.post(f"/admin/webhooks/webhookendpoint/{stripe_endpoint.pk}/change/", form)

    assert response.status_code == 302, response.content[:2000]
    stripe_endpoint.refresh_from_db()
    assert (stripe_endpoint.mode, stripe_endpoint.is_active) == ("test", False)
    assert stripe_endpoint.allowed_sources == ["10.1.2.3/32", "192.0.2.0/24"]
    [entry] = _changes()
    assert entry.actor == str(root.pk)
    assert entry.data == {
        "endpoint_id": stripe_endpoint.pk, "slug": {"before": "stripe", "after": "stripe"}, "source": "admin", "note": None,
        "fields": ["allowed_sources", "is_active", "mode"],
        "is_active": {"before": True, "after": False}, "mode": {"before": "live", "after": "test"},
        "allowed_sources_count": {"before": 0, "after": 2},
    }
    assert "10.1.2.3" not in str(entry.data)


def test_a_description_edit_is_not_an_audited_change_and_a_bad_network_is_refused(client, stripe_endpoint):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.invalid", "pw"))
    url = f"/admin/webhooks/webhookendpoint/{stripe_endpoint.pk}/change/"

    assert client.post(url, _form(stripe_endpoint, description="primary")).status_code == 302
    assert client.post(url, _form(stripe_endpoint, allowed_sources='["not-a-network"]')).status_code == 200

    stripe_endpoint.refresh_from_db()
    assert (stripe_endpoint.description, stripe_endpoint.allowed_sources) == ("primary", [])
    assert _changes() == []


def test_the_service_never_writes_the_secrets_version_from_its_copy(stripe_endpoint):
    stale = WebhookEndpoint.objects.get(pk=stripe_endpoint.pk)
    WebhookEndpoint.objects.filter(pk=stripe_endpoint.pk).update(secrets_version=5)

    assert webhook_endpoint_update(endpoint=stale, is_active=False, actor="system", source="test", note="paused") == ["is_active"]

    stripe_endpoint.refresh_from_db()
    assert (stripe_endpoint.is_active, stripe_endpoint.secrets_version) == (False, 5)
    [entry] = _changes()
    assert entry.data["note"] == "paused"


def test_the_set_sources_command_is_audited_as_the_system(stripe_endpoint):
    call_command("webhook_endpoint", "set-sources", "stripe", "--allow-ip", "203.0.113.0/24")

    [entry] = _changes()
    assert (entry.actor, entry.data["fields"], entry.data["source"]) == ("system", ["allowed_sources"], "command webhook_endpoint set-sources")
