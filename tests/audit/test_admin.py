import pytest
from django.contrib.auth.models import User

from audit.models import AuditEntry
from audit.services import audit_entry_append

LIST = "/admin/audit/auditentry/"


@pytest.fixture
def admin_client_logged_in(client, db):
    admin = User.objects.create_superuser("admin-1", password="unused-password-1")
    client.force_login(admin)
    return client


@pytest.fixture
def entry(db):
    audit_entry_append(action="webhook.received", data={"type": "charge.refunded"})
    return audit_entry_append(
        action="entitlement.revoked", actor="5", subjects={"email": "frank@example.com"},
        data={"entitlement_key": "secret-plan-marker", "reason": "refund"},
    )


@pytest.mark.django_db
class TestAuditEntryAdmin:
    def test_the_list_shows_action_time_actor_and_event_but_never_data(self, admin_client_logged_in, entry):
        page = admin_client_logged_in.get(LIST).content.decode()
        assert "entitlement.revoked" in page and "webhook.received" in page
        assert "secret-plan-marker" not in page and "charge.refunded" not in page

    def test_the_detail_page_is_read_only(self, admin_client_logged_in, entry):
        response = admin_client_logged_in.get(f"{LIST}{entry.pk}/change/")
        assert response.status_code == 200
        page = response.content.decode()
        assert "secret-plan-marker" in page  # data is shown (redacted) on the detail page only
        assert 'name="_save"' not in page and "deletelink" not in page

    def test_adding_changing_and_deleting_are_refused(self, admin_client_logged_in, entry):
        assert admin_client_logged_in.get(f"{LIST}add/").status_code == 403
        assert admin_client_logged_in.post(f"{LIST}{entry.pk}/change/", {"actor": "1"}).status_code == 403
        assert admin_client_logged_in.post(f"{LIST}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
        response = admin_client_logged_in.post(LIST, {"action": "delete_selected", "_selected_action": [entry.pk]})
        assert AuditEntry.objects.count() == 2
        assert response.status_code in (200, 302)

    def test_search_matches_an_email_by_its_keyed_hash_and_an_event_id(self, admin_client_logged_in, entry):
        found = admin_client_logged_in.get(LIST, {"q": "Frank@Example.com"})
        assert found.context["cl"].result_count == 1
        assert list(found.context["cl"].result_list) == [entry]
        assert admin_client_logged_in.get(LIST, {"q": "00000000-0000-0000-0000-000000000000"}).context["cl"].result_count == 0
