"""Moving a customer (and its entitlements) to another user: only through customer_user_link, audited."""

import pytest

from fulfillment.models import Customer
from fulfillment.selectors import entitlement_list
from fulfillment.services import customer_user_link, customers_link_user
from tests.fulfillment.admin_support import audit_entries, customer_create, entitlement_create, superuser_create

pytestmark = pytest.mark.django_db


def _change_url(customer) -> str:
    return f"/admin/fulfillment/customer/{customer.pk}/change/"


@pytest.fixture
def root(client):
    user = superuser_create()
    client.force_login(user)
    return user


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", email="bob@example.com")


class TestAdmin:
    def test_changing_the_user_moves_the_entitlements_with_one_audit_entry(self, client, root, alice, bob):
        customer = customer_create(user=alice)
        entitlement_create(customer=customer)
        page = client.get(_change_url(customer)).content.decode()
        assert 'name="note"' in page and 'name="user"' in page and 'name="provider_customer_id"' not in page

        response = client.post(_change_url(customer), {"user": str(bob.pk), "note": "account merge, ticket OPS-9"})

        assert response.status_code == 302, response.content[:2000]
        customer.refresh_from_db()
        assert customer.user == bob
        assert {row.key for row in entitlement_list(user_id=bob.pk)} == {"pro"}
        [entry] = audit_entries()
        assert (entry.action, entry.actor) == ("customer.linked", str(root.pk))
        assert entry.data == {
            "customer_id": customer.pk, "from_user": alice.pk, "to_user": bob.pk, "source": "admin",
            "note": "account merge, ticket OPS-9",
        }
        # The provider customer id is stored only as a subject hash, never in clear.
        assert "cus_A" not in str(entry.data)
        assert {subject.kind for subject in entry.subjects.all()} == {"customer", "user"}

    def test_a_user_change_without_a_note_is_refused(self, client, root, alice, bob):
        customer = customer_create(user=alice)

        response = client.post(_change_url(customer), {"user": str(bob.pk), "note": ""})

        assert response.status_code == 200 and "say why the customer moves" in response.content.decode()
        customer.refresh_from_db()
        assert customer.user == alice and audit_entries() == []

    def test_read_only_fields_posted_to_the_change_form_are_ignored(self, client, root, alice):
        customer = customer_create(user=alice)

        response = client.post(_change_url(customer), {
            "user": str(alice.pk), "provider_customer_id": "cus_EVIL", "key": "cus_EVIL", "provider": "paddle", "note": "",
        })

        assert response.status_code == 302
        customer.refresh_from_db()
        assert (customer.provider, customer.key, customer.provider_customer_id, customer.user) == ("stripe", "cus_A", "cus_A", alice)
        assert audit_entries() == []

    def test_customers_cannot_be_added_or_deleted_in_the_admin(self, client, root, alice):
        customer = customer_create(user=alice)
        assert client.get("/admin/fulfillment/customer/add/").status_code == 403
        assert client.post(f"/admin/fulfillment/customer/{customer.pk}/delete/", {"post": "yes"}).status_code == 403
        assert Customer.objects.filter(pk=customer.pk).exists()


class TestServices:
    def test_unlinking_is_audited_under_the_user_who_lost_the_customer(self, alice):
        customer = customer_create(user=alice)

        assert customer_user_link(customer=customer, user=None, actor="3", note="wrong person") is True

        customer.refresh_from_db()
        assert customer.user is None
        [entry] = audit_entries()
        assert (entry.data["from_user"], entry.data["to_user"], entry.data["note"]) == (alice.pk, None, "wrong person")
        assert {subject.kind for subject in entry.subjects.all()} == {"customer", "user"}

    def test_linking_to_the_same_user_writes_nothing(self, alice):
        customer = customer_create(user=alice)
        assert customer_user_link(customer=customer, user=alice, actor="3") is False
        assert audit_entries() == []

    def test_an_email_in_the_note_is_scrubbed(self, alice, bob):
        customer = customer_create(user=alice)
        customer_user_link(customer=customer, user=bob, actor="3", note="she wrote from alice.other@example.org")
        [entry] = audit_entries()
        assert entry.data["note"] == "she wrote from [email]"

    def test_matching_guests_to_a_new_user_by_email_is_audited_as_the_system(self, bob):
        from canonical.facts import email_hash

        guest = Customer.objects.create(provider="stripe", key="email:x", email_hash=email_hash("BOB@example.com"))

        assert customers_link_user(user=bob) == 1

        [entry] = audit_entries()
        assert (entry.action, entry.actor) == ("customer.linked", "system")
        assert (entry.data["customer_id"], entry.data["from_user"], entry.data["to_user"], entry.data["source"]) == (
            guest.pk, None, bob.pk, "email_match",
        )


def test_an_event_that_reveals_a_guests_user_audits_the_link_once(catalog, alice, deliver):
    import time

    from tests.fulfillment import stripe_events as se

    created = int(time.time()) - 3600
    deliver(se.checkout_completed(session_id="cs_1", created=created, price_id="price_addon", customer="cus_G", payment_intent="pi_1"))
    assert Customer.objects.get(key="cus_G").user is None
    later = se.checkout_completed(session_id="cs_2", created=created + 60, price_id="price_pro", customer="cus_G",
                                  user_id=alice.id, payment_intent="pi_2")
    event_id, _ = deliver(later)
    deliver(later)  # a redelivery changes nothing

    assert Customer.objects.get(key="cus_G").user == alice
    [entry] = audit_entries("customer.linked")
    assert (entry.actor, str(entry.event_id)) == ("system", str(event_id))
    assert entry.data == {"customer_id": Customer.objects.get(key="cus_G").pk, "from_user": None, "to_user": alice.pk, "source": "event"}
