import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit.services import audit_entry_append
from tests.audit.pii import assert_no_pii, audit_table_texts

URL = "/api/v1/audit/"


@pytest.mark.django_db
class TestAuditApiPermissions:
    def test_anonymous_requests_get_401(self, client):
        assert client.get(URL).status_code == 401

    def test_operators_and_services_get_403(self, operator_client, services_client):
        assert operator_client.get(URL).status_code == 403
        assert services_client.get(URL).status_code == 403

    def test_support_and_superusers_may_read(self, support_client, superuser_client):
        audit_entry_append(action="webhook.received")
        assert support_client.get(URL).status_code == 200
        assert len(superuser_client.get(URL).json()["results"]) == 1

    def test_it_is_read_only(self, support_client):
        assert support_client.post(URL, {"action": "webhook.received"}, format="json").status_code == 405
        assert support_client.delete(URL).status_code == 405


@pytest.fixture
def entries(db):
    event = uuid.uuid4()
    received = audit_entry_append(action="webhook.received", event_id=event, data={"type": "checkout.session.completed"})
    granted = audit_entry_append(
        action="entitlement.granted", event_id=event, actor="system",
        subjects={"email": "ALICE@example.com", "customer": "cus_A1"},
        data={"entitlement_key": "pro", "customer_details": {"email": "ALICE@example.com", "name": "Alice Liddell"}},
    )
    other = audit_entry_append(action="entitlement.granted", subjects={"email": "bob@example.com"}, data={"entitlement_key": "pro"})
    changed = audit_entry_append(action="preferences.changed", actor="12", subjects={"user": "12"})
    return {"event": event, "received": received, "granted": granted, "other": other, "changed": changed}


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.mark.django_db
class TestAuditApiFilters:
    def test_it_lists_newest_first_with_the_contract_fields(self, support_client, entries):
        body = support_client.get(URL).json()
        assert [row["id"] for row in body["results"]] == [4, 3, 2, 1]
        row = body["results"][2]
        assert set(row) == {"id", "action", "occurred_at", "actor", "event", "data", "chain_shard", "chain_seq", "prev_hash", "entry_hash"}
        assert (row["chain_shard"], row["chain_seq"]) == (entries["granted"].chain_shard, entries["granted"].chain_seq)
        assert row["event"] == str(entries["event"]) and row["action"] == "entitlement.granted"
        assert row["data"] == {"entitlement_key": "pro"}  # customer_details is not on the allow-list
        assert row["prev_hash"] == entries["received"].entry_hash and row["entry_hash"] == entries["granted"].entry_hash

    @pytest.mark.parametrize("q", ["alice@example.com", "Alice@Example.COM", "  alice@example.com "])
    def test_q_finds_an_email_through_its_keyed_hash(self, support_client, entries, q):
        assert _ids(support_client.get(URL, {"q": q})) == [entries["granted"].id]

    def test_q_finds_other_identifiers(self, support_client, entries):
        assert _ids(support_client.get(URL, {"q": "cus_A1"})) == [entries["granted"].id]
        assert _ids(support_client.get(URL, {"q": "12"})) == [entries["changed"].id]
        assert _ids(support_client.get(URL, {"q": "carol@example.com"})) == []

    def test_the_clear_email_is_stored_nowhere_in_the_audit_tables(self, support_client, entries):
        support_client.get(URL, {"q": "alice@example.com"})
        texts = list(audit_table_texts())
        assert len(texts) >= 4 + 4  # entries and subjects, at least
        with connection.cursor() as cursor:  # and, independently of the ORM, every column as text
            for table in ("audit_auditentry", "audit_auditsubject", "audit_auditchainhead"):
                cursor.execute(f"SELECT t::text FROM {table} t")
                texts += [row[0] for row in cursor.fetchall()]
        assert_no_pii(texts, ["alice@example.com", "bob@example.com", "Alice Liddell", "Liddell"])

    def test_action_filter(self, support_client, entries):
        assert _ids(support_client.get(URL, {"action": "entitlement.granted"})) == [3, 2]
        assert support_client.get(URL, {"action": "no.such"}).status_code == 400

    def test_event_filter(self, support_client, entries):
        assert _ids(support_client.get(URL, {"event": str(entries["event"])})) == [2, 1]
        assert _ids(support_client.get(URL, {"event": str(uuid.uuid4())})) == []
        assert support_client.get(URL, {"event": "nope"}).status_code == 400

    def test_since_and_until_filters(self, support_client, entries, time_machine):
        time_machine.move_to(timezone.now() + timedelta(days=2))
        later = audit_entry_append(action="dlq.resolved", actor="3")
        cut = (later.occurred_at - timedelta(days=1)).isoformat()
        assert _ids(support_client.get(URL, {"since": cut})) == [later.id]
        assert _ids(support_client.get(URL, {"until": cut})) == [4, 3, 2, 1]
        assert _ids(support_client.get(URL, {"since": cut, "action": "webhook.received"})) == []

    def test_filters_combine(self, support_client, entries):
        assert _ids(support_client.get(URL, {"q": "alice@example.com", "action": "webhook.received"})) == []
        assert _ids(support_client.get(URL, {"q": "alice@example.com", "event": str(entries["event"])})) == [2]

    def test_it_paginates_with_a_cursor(self, support_client, entries):
        first = support_client.get(URL, {"page_size": 3}).json()
        assert [row["id"] for row in first["results"]] == [4, 3, 2]
        second = support_client.get(first["next"]).json()
        assert [row["id"] for row in second["results"]] == [1] and second["next"] is None
