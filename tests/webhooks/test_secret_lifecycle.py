"""Secret lifecycle: changes take effect on the next request in every process, rolls expire the old
secrets on their own, removal is by value, and every change is audited with its actor.

"Another web process" is simulated by keeping this process's key cache as it was before the change
(the services clear only the cache of the process that made the change, at commit).
"""

import json
import secrets
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEntry
from providers.stripe import samples
from tests.conftest import post_json, signed_headers
from webhooks import endpoints, receiving
from webhooks.admin import WebhookEndpointAdmin
from webhooks.endpoints import endpoint_secret_add, endpoint_secret_delete, endpoint_secret_remove, secret_expiry_parse
from webhooks.exceptions import InvalidSecret, InvalidSignature, UnknownEndpoint
from webhooks.models import EndpointSecret, WebhookEndpoint, WebhookEvent
from webhooks.receiving import webhook_event_receive

pytestmark = pytest.mark.django_db


def _new_secret() -> str:
    return f"whsec_{secrets.token_hex(16)}"


def _delivery(secret: str, *, event_type: str = "invoice.paid") -> tuple[bytes, dict]:
    body = json.dumps(samples.stripe_event(event_type)).encode()
    return body, signed_headers("stripe", secret, body)


def _receive(secret: str, slug: str = "stripe"):
    body, headers = _delivery(secret)
    return webhook_event_receive(slug=slug, body=body, headers=headers)


class _OtherProcess:
    """Keeps the key cache as a web process that did not make the change would have it."""

    def __enter__(self):
        self.saved = dict(receiving._endpoint_cache)
        return self

    def __exit__(self, *exc):
        receiving._endpoint_cache.clear()
        receiving._endpoint_cache.update(self.saved)


def _warm(secret: str, slug: str = "stripe") -> None:
    assert _receive(secret, slug).created
    assert slug in receiving._endpoint_cache


# --- Taking effect on the next request ------------------------------------------------------------


def test_a_secret_added_elsewhere_verifies_on_the_next_request(stripe_endpoint, stripe_secret):
    _warm(stripe_secret)
    new = _new_secret()
    with _OtherProcess():
        endpoint_secret_add(endpoint=stripe_endpoint, secret=new)

    assert receiving._endpoint_cache["stripe"].version == 1  # still the stale copy (as created)
    assert _receive(new).created
    assert receiving._endpoint_cache["stripe"].version == 2


def test_a_secret_removed_elsewhere_refuses_on_the_next_request(stripe_endpoint, stripe_secret):
    old = stripe_secret
    endpoint_secret_add(endpoint=stripe_endpoint, secret=_new_secret())
    _warm(old)
    count = WebhookEvent.objects.count()
    with _OtherProcess():
        endpoint_secret_remove(endpoint=stripe_endpoint, secret=old)

    with pytest.raises(InvalidSignature):
        _receive(old)
    assert WebhookEvent.objects.count() == count  # nothing stored under the removed secret


def test_a_duplicate_signed_with_a_removed_secret_is_refused_too(stripe_endpoint, stripe_secret):
    keep = _new_secret()
    endpoint_secret_add(endpoint=stripe_endpoint, secret=keep)
    body, headers = _delivery(stripe_secret)
    assert webhook_event_receive(slug="stripe", body=body, headers=headers).created
    with _OtherProcess():
        endpoint_secret_remove(endpoint=stripe_endpoint, secret=stripe_secret)

    with pytest.raises(InvalidSignature):
        webhook_event_receive(slug="stripe", body=body, headers=headers)


def test_an_endpoint_deactivated_elsewhere_is_unknown_on_the_next_request(stripe_endpoint, stripe_secret):
    _warm(stripe_secret)
    WebhookEndpoint.objects.filter(pk=stripe_endpoint.pk).update(is_active=False)

    with pytest.raises(UnknownEndpoint):
        _receive(stripe_secret)


def test_a_roll_with_no_delay_refuses_the_old_secret_at_once(stripe_endpoint, stripe_secret):
    _warm(stripe_secret)
    new = _new_secret()
    with _OtherProcess():
        endpoint_secret_add(endpoint=stripe_endpoint, secret=new, expire_others_in=timedelta(0))

    with pytest.raises(InvalidSignature):
        _receive(stripe_secret)
    assert _receive(new).created


def test_a_rolled_secret_stops_verifying_at_its_expiry_with_nobody_acting(stripe_endpoint, stripe_secret):
    new = _new_secret()
    endpoint_secret_add(endpoint=stripe_endpoint, secret=new, expire_others_in=timedelta(hours=24))
    _warm(stripe_secret)  # the old one still verifies, and its expiry is now cached
    _warm(new)

    with time_machine.travel(timezone.now() + timedelta(hours=24, seconds=1)):
        with pytest.raises(InvalidSignature):
            _receive(stripe_secret)
        assert _receive(new).created


def test_a_roll_keeps_an_earlier_expiry(stripe_endpoint):
    first, second = _new_secret(), _new_secret()
    endpoint_secret_add(endpoint=stripe_endpoint, secret=first, expire_others_in=timedelta(hours=1))
    endpoint_secret_add(endpoint=stripe_endpoint, secret=second, expire_others_in=timedelta(days=7))

    rows = {row.fingerprint: row for row in EndpointSecret.objects.filter(endpoint=stripe_endpoint)}
    original = next(row for row in rows.values() if row.created_at == min(r.created_at for r in rows.values()))
    assert original.expires_at < timezone.now() + timedelta(hours=2)
    assert rows[endpoints.secret_fingerprint(first)].expires_at > timezone.now() + timedelta(days=6)
    assert rows[endpoints.secret_fingerprint(second)].expires_at is None


def test_every_secret_change_bumps_the_endpoint_version(stripe_endpoint, stripe_secret):
    new = _new_secret()
    endpoint_secret_add(endpoint=stripe_endpoint, secret=new)
    endpoint_secret_remove(endpoint=stripe_endpoint, secret=stripe_secret)
    row = EndpointSecret.objects.get(endpoint=stripe_endpoint)
    endpoint_secret_delete(secret_id=row.pk, actor="system")

    stripe_endpoint.refresh_from_db()
    # create (1), add (2), remove (3), delete (4)
    assert stripe_endpoint.secrets_version == 4


# --- Cost of the hot path ------------------------------------------------------------------------


def test_an_accepted_request_with_cached_keys_costs_one_statement(stripe_endpoint, stripe_secret):
    _warm(stripe_secret)
    body, headers = _delivery(stripe_secret)

    with CaptureQueriesContext(connection) as queries:
        assert webhook_event_receive(slug="stripe", body=body, headers=headers).created

    assert len(queries) == 1
    assert queries[0]["sql"].startswith("WITH owner AS")


def test_a_refused_request_with_cached_keys_costs_one_indexed_read(stripe_endpoint, stripe_secret):
    _warm(stripe_secret)

    with CaptureQueriesContext(connection) as queries:
        with pytest.raises(InvalidSignature):
            _receive(_new_secret())

    assert len(queries) == 1
    assert "secrets_version" in queries[0]["sql"]


def test_a_request_with_a_malformed_signature_costs_no_query(stripe_endpoint, stripe_secret):
    _warm(stripe_secret)
    body, _ = _delivery(stripe_secret)

    with CaptureQueriesContext(connection) as queries:
        with pytest.raises(Exception):
            webhook_event_receive(slug="stripe", body=body, headers={"Stripe-Signature": "garbage"})

    assert len(queries) == 0


def test_duplicate_and_conflict_answers_are_unchanged(stripe_endpoint, stripe_secret, client):
    event = samples.stripe_event("invoice.paid")
    body = json.dumps(event).encode()
    first = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))
    again = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))
    changed = json.dumps({**event, "data": {"object": {"id": "in_other"}}}).encode()
    conflict = post_json(client, "/webhooks/stripe/", changed, signed_headers("stripe", stripe_secret, changed))

    assert first.json()["status"] == "accepted"
    assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    assert conflict.status_code == 409


# --- Removal by value, whatever the fingerprint key -----------------------------------------------


def test_after_a_blind_index_key_rotation_remove_finds_the_right_row(stripe_endpoint, stripe_secret, settings):
    keep = _new_secret()
    endpoint_secret_add(endpoint=stripe_endpoint, secret=keep)
    _warm(stripe_secret)
    old_fingerprint = endpoints.secret_fingerprint(stripe_secret)
    settings.BLIND_INDEX_KEY = "a-rotated-blind-index-key"

    with _OtherProcess():
        removed = endpoint_secret_remove(endpoint=stripe_endpoint, secret=stripe_secret)

    assert removed.fingerprint == old_fingerprint
    assert endpoints.endpoint_secrets_decrypted(endpoint=stripe_endpoint) == [keep]
    with pytest.raises(InvalidSignature):
        _receive(stripe_secret)
    assert _receive(keep).created


def test_after_a_blind_index_key_rotation_the_same_secret_cannot_be_added_twice(stripe_endpoint, stripe_secret, settings):
    settings.BLIND_INDEX_KEY = "a-rotated-blind-index-key"

    with pytest.raises(InvalidSecret):
        endpoint_secret_add(endpoint=stripe_endpoint, secret=stripe_secret)
    assert EndpointSecret.objects.filter(endpoint=stripe_endpoint).count() == 1


def test_removing_an_unknown_secret_changes_nothing(stripe_endpoint):
    with pytest.raises(InvalidSecret):
        endpoint_secret_remove(endpoint=stripe_endpoint, secret=_new_secret())

    stripe_endpoint.refresh_from_db()
    assert stripe_endpoint.secrets_version == 1
    assert not AuditEntry.objects.filter(action="endpoint.secret_removed").exists()


# --- Durations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("30m", 1800), ("7d", 604800), ("90s", 90), ("0", 0), ("0h", 0)]
)
def test_durations_are_parsed(text, seconds):
    assert secret_expiry_parse(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "24", "-1h", "1w", "1.5h", "h", "24 hours", "400d"])
def test_bad_durations_are_refused(text):
    with pytest.raises(InvalidSecret):
        secret_expiry_parse(text)


# --- Audit ------------------------------------------------------------------------------------------------


def test_each_change_is_audited_with_fingerprints_only(stripe_endpoint, stripe_secret):
    new = _new_secret()
    endpoint_secret_add(endpoint=stripe_endpoint, secret=new, expire_others_in=timedelta(hours=24), source="test")
    endpoint_secret_remove(endpoint=stripe_endpoint, secret=stripe_secret, source="test")

    entries = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in entries] == ["endpoint.secret_added", "endpoint.secret_added", "endpoint.secret_removed"]
    created, added, removed = entries
    assert all(e.actor == "system" for e in entries)
    assert added.data["key_fingerprint"] == endpoints.secret_fingerprint(new)
    assert added.data["expiring_key_fingerprints"] == [endpoints.secret_fingerprint(stripe_secret)]
    assert added.data["others_expire_at"]
    assert removed.data["key_fingerprint"] == endpoints.secret_fingerprint(stripe_secret)
    assert removed.data["slug"] == "stripe" and removed.data["source"] == "test"
    dumped = json.dumps([e.data for e in entries])
    for secret in (stripe_secret, new):
        assert secret not in dumped
        assert secret.removeprefix("whsec_")[:10] not in dumped


# --- Admin ---------------------------------------------------------------------------------------------


@pytest.fixture
def admin_user():
    return get_user_model().objects.create_superuser("root", "root@example.invalid", "pw")


def _change_form(endpoint, **extra) -> dict:
    rows = list(EndpointSecret.objects.filter(endpoint=endpoint).order_by("created_at"))
    data = {
        "slug": endpoint.slug, "scheme": endpoint.scheme, "description": "", "is_active": "on",
        "mode": endpoint.mode, "allowed_sources": json.dumps(endpoint.allowed_sources),
        "new_secret": "", "expire_others_in": "",
        "secrets-TOTAL_FORMS": str(len(rows)), "secrets-INITIAL_FORMS": str(len(rows)),
        "secrets-MIN_NUM_FORMS": "0", "secrets-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        data[f"secrets-{index}-id"] = str(row.pk)
        data[f"secrets-{index}-endpoint"] = str(endpoint.pk)
    data.update(extra)
    return data


def test_an_admin_deletion_goes_through_the_service_and_is_audited_with_the_user(client, admin_user, stripe_endpoint, stripe_secret):
    keep = _new_secret()
    endpoint_secret_add(endpoint=stripe_endpoint, secret=keep)
    _warm(stripe_secret)
    client.force_login(admin_user)
    first = EndpointSecret.objects.filter(endpoint=stripe_endpoint).order_by("created_at").first()

    with _OtherProcess():
        response = client.post(
            f"/admin/webhooks/webhookendpoint/{stripe_endpoint.pk}/change/", _change_form(stripe_endpoint, **{"secrets-0-DELETE": "on"})
        )

    assert response.status_code == 302, response.content[:2000]
    assert not EndpointSecret.objects.filter(pk=first.pk).exists()
    entry = AuditEntry.objects.get(action="endpoint.secret_removed")
    assert entry.actor == str(admin_user.pk)
    assert entry.data["source"] == "admin"
    assert entry.data["key_fingerprint"] == first.fingerprint
    with pytest.raises(InvalidSignature):
        _receive(stripe_secret)


def test_an_admin_roll_adds_the_secret_and_expires_the_others(client, admin_user, stripe_endpoint, stripe_secret):
    client.force_login(admin_user)
    new = _new_secret()

    response = client.post(
        f"/admin/webhooks/webhookendpoint/{stripe_endpoint.pk}/change/",
        _change_form(stripe_endpoint, new_secret=new, expire_others_in="0"),
    )

    assert response.status_code == 302, response.content[:2000]
    entry = AuditEntry.objects.filter(action="endpoint.secret_added").order_by("-id").first()
    assert entry.actor == str(admin_user.pk)
    with pytest.raises(InvalidSignature):
        _receive(stripe_secret)
    assert _receive(new).created


def test_the_admin_refuses_a_bad_duration_without_changing_anything(client, admin_user, stripe_endpoint):
    client.force_login(admin_user)

    response = client.post(
        f"/admin/webhooks/webhookendpoint/{stripe_endpoint.pk}/change/",
        _change_form(stripe_endpoint, new_secret=_new_secret(), expire_others_in="soon"),
    )

    assert response.status_code == 200
    assert EndpointSecret.objects.filter(endpoint=stripe_endpoint).count() == 1


def test_an_admin_edit_of_an_endpoint_never_moves_its_version_back(client, admin_user, stripe_endpoint, monkeypatch):
    client.force_login(admin_user)
    form = _change_form(stripe_endpoint, description="edited")
    # The admin read the endpoint just before a secret change committed elsewhere.
    stale = WebhookEndpoint.objects.get(pk=stripe_endpoint.pk)
    monkeypatch.setattr(WebhookEndpointAdmin, "get_object", lambda self, request, object_id, from_field=None: stale)
    endpoint_secret_add(endpoint=stripe_endpoint, secret=_new_secret())

    response = client.post(f"/admin/webhooks/webhookendpoint/{stripe_endpoint.pk}/change/", {**form, "secrets-TOTAL_FORMS": "1", "secrets-INITIAL_FORMS": "1"})

    assert response.status_code == 302, response.content[:2000]
    stripe_endpoint.refresh_from_db()
    assert stripe_endpoint.description == "edited"
    assert stripe_endpoint.secrets_version == 2


def test_deleting_an_endpoint_in_the_admin_audits_its_secrets_removal(client, admin_user, stripe_endpoint):
    client.force_login(admin_user)

    response = client.post(f"/admin/webhooks/webhookendpoint/{stripe_endpoint.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not WebhookEndpoint.objects.filter(pk=stripe_endpoint.pk).exists()
    entry = AuditEntry.objects.get(action="endpoint.secret_removed")
    assert entry.actor == str(admin_user.pk)
