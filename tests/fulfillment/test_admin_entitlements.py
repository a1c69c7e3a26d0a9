"""Entitlements in the admin: read-only for everyone; revoke/restore only through the audited actions."""

import pytest

from fulfillment.models import Entitlement
from fulfillment.services import entitlement_grant, entitlement_restore, entitlement_revoke
from tests.fulfillment.admin_support import audit_entries, customer_create, entitlement_create, superuser_create

CHANGELIST = "/admin/fulfillment/entitlement/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def root(client):
    user = superuser_create()
    client.force_login(user)
    return user


class TestAdminActions:
    def test_revoke_asks_for_a_note_then_revokes_with_one_audit_entry(self, client, root, alice):
        row = entitlement_create(customer=customer_create(user=alice))

        form = client.post(CHANGELIST, {"action": "revoke", "_selected_action": [row.pk], "index": 0})
        assert form.status_code == 200 and 'id="entitlement-note-form"' in form.content.decode()
        row.refresh_from_db()
        assert row.status == "active" and audit_entries() == []

        empty = client.post(CHANGELIST, {"action": "revoke", "_selected_action": [row.pk], "apply": "Revoke", "note": " "})
        assert empty.status_code == 200 and "This field is required" in empty.content.decode()
        assert audit_entries() == []

        done = client.post(CHANGELIST, {
            "action": "revoke", "_selected_action": [row.pk], "apply": "Revoke", "note": "chargeback by phone, ticket OPS-7",
        })

        assert done.status_code == 302
        row.refresh_from_db()
        assert (row.status, row.revoke_reason) == ("revoked", "operator")
        [entry] = audit_entries()
        assert (entry.action, entry.actor) == ("entitlement.revoked", str(root.pk))
        assert entry.data["source"] == "admin"
        assert entry.data["note"] == "chargeback by phone, ticket OPS-7"
        assert (entry.data["entitlement_id"], entry.data["entitlement"], entry.data["customer_id"]) == (row.pk, "pro", row.customer_id)
        assert {subject.kind for subject in entry.subjects.all()} == {"customer", "user", "payment"}  # the row's payment too (issue 12)

    def test_restore_grants_again_and_skips_rows_already_active(self, client, root, alice):
        customer = customer_create(user=alice)
        revoked = entitlement_create(customer=customer, key="pro", status="revoked", revoke_reason="refunded")
        active = entitlement_create(customer=customer, key="reports")

        done = client.post(CHANGELIST, {
            "action": "restore", "_selected_action": [revoked.pk, active.pk], "apply": "Restore", "note": "refund reversed",
        }, follow=True)

        assert "Restored 1 entitlement(s); skipped 1 already active." in done.content.decode()
        revoked.refresh_from_db()
        assert (revoked.status, revoked.revoke_reason) == ("active", "")
        [entry] = audit_entries()
        assert (entry.action, entry.actor, entry.data["entitlement_id"]) == ("entitlement.granted", str(root.pk), revoked.pk)
        assert (entry.data["source"], entry.data["note"], entry.data["reason"]) == ("admin", "refund reversed", "restored after refunded")

    def test_an_email_in_the_note_does_not_land_in_the_audit_log_in_clear(self, client, root, alice):
        row = entitlement_create(customer=customer_create(user=alice))

        client.post(CHANGELIST, {
            "action": "revoke", "_selected_action": [row.pk], "apply": "Revoke", "note": "asked by carol@example.net",
        })

        [entry] = audit_entries()
        assert entry.data["note"] == "asked by [email]"
        assert "carol" not in str(entry.data)


class TestDirectEditsAreRefused:
    def test_even_a_superuser_cannot_add_change_or_delete_a_row(self, client, root, alice):
        row = entitlement_create(customer=customer_create(user=alice))

        assert client.get(f"{CHANGELIST}add/").status_code == 403
        changed = client.post(f"{CHANGELIST}{row.pk}/change/", {"status": "revoked", "key": "other"})
        assert changed.status_code == 403
        assert client.post(f"{CHANGELIST}{row.pk}/delete/", {"post": "yes"}).status_code == 403
        listed = client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})
        assert listed.status_code in (200, 302)

        row.refresh_from_db()
        assert (row.key, row.status) == ("pro", "active")
        assert Entitlement.objects.filter(pk=row.pk).exists()
        assert audit_entries() == []

    def test_the_detail_page_is_view_only(self, client, root, alice):
        row = entitlement_create(customer=customer_create(user=alice))
        page = client.get(f"{CHANGELIST}{row.pk}/change/")
        assert page.status_code == 200
        assert 'name="_save"' not in page.content.decode()

    def test_staff_without_the_change_permission_get_no_actions(self, client, alice, django_user_model):
        from django.contrib.auth.models import Permission

        viewer = django_user_model.objects.create_user("viewer", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_entitlement"))
        client.force_login(viewer)
        row = entitlement_create(customer=customer_create(user=alice))

        page = client.get(CHANGELIST)
        assert page.status_code == 200 and 'value="revoke"' not in page.content.decode()
        client.post(CHANGELIST, {"action": "revoke", "_selected_action": [row.pk], "apply": "Revoke", "note": "x"})
        row.refresh_from_db()
        assert row.status == "active" and audit_entries() == []


class TestServices:
    def test_revoke_writes_the_row_and_one_entry_and_is_a_no_op_the_second_time(self, alice):
        row = entitlement_create(customer=customer_create(user=alice))

        assert entitlement_revoke(entitlement=row, actor="7", note="fraud") is True
        assert entitlement_revoke(entitlement=row, actor="7", note="again") is False

        row.refresh_from_db()
        assert row.status == "revoked" and row.revoked_at is not None
        [entry] = audit_entries()
        assert (entry.action, entry.actor, entry.data["note"], entry.data["source"]) == ("entitlement.revoked", "7", "fraud", "admin")

    def test_restore_without_a_note_records_no_note(self, alice):
        row = entitlement_create(customer=customer_create(user=alice), status="revoked")

        assert entitlement_restore(entitlement=row, actor="system", note="", source="support_tool") is True

        [entry] = audit_entries()
        assert (entry.action, entry.actor, entry.data["source"]) == ("entitlement.granted", "system", "support_tool")
        assert "note" not in entry.data

    def test_a_redelivered_older_grant_does_not_undo_an_operator_revocation(self, alice):
        row = entitlement_create(customer=customer_create(user=alice))
        entitlement_revoke(entitlement=row, actor="7", note="fraud")

        _, became_active = entitlement_grant(
            customer=row.customer, key=row.key, source=row.source, at=row.state_at, event_id=None, payment_intent="pi_1"
        )

        row.refresh_from_db()
        assert became_active is False and row.status == "revoked"
