import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from tests.audit.conftest import operator_client, services_client, superuser_client, support_client  # noqa: F401
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import catalog, deliver  # noqa: F401

BUYER_EMAIL = "carol.buyer@example.org"
BUYER_USERNAME = "carol-q-buyer"


@pytest.fixture
def buyer(db):
    """A user whose username and email must never reach a lookup's answer."""
    return get_user_model().objects.create_user(BUYER_USERNAME, email=BUYER_EMAIL)


@pytest.fixture
def story(catalog, buyer, deliver):
    """One buyer's real story, processed through the services: a paid checkout (found by email),
    a second payment, then a full refund of the first that names only the payment and the customer.
    Another buyer's payment is in the same tables and must never show up."""

    def build(t0: int) -> dict:
        paid, _ = deliver(se.checkout_completed(
            session_id="cs_1", created=t0, price_id="price_pro", email=BUYER_EMAIL.upper(), customer="cus_CAROL",
            payment_intent="pi_CAROL_1",
        ))
        addon, _ = deliver(se.checkout_completed(
            session_id="cs_2", created=t0 + 60, price_id="price_addon", email=BUYER_EMAIL, customer="cus_CAROL",
            payment_intent="pi_CAROL_2",
        ))
        refund, _ = deliver(se.charge_refunded(charge_id="ch_1", created=t0 + 120, payment_intent="pi_CAROL_1", customer="cus_CAROL"))
        other, _ = deliver(se.checkout_completed(
            session_id="cs_9", created=t0 + 30, price_id="price_pro", email="dave.other@example.org", customer="cus_DAVE",
            payment_intent="pi_DAVE_1",
        ))
        return {"paid": paid, "addon": addon, "refund": refund, "other": other}

    return build


def staff_create(username: str, group: str):
    """A staff user in one of the contract's groups (the admin's view of that group)."""
    user = get_user_model().objects.create_user(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def support_admin(client):
    """The test client logged in to the admin as a support staff member."""
    client.force_login(staff_create("sam-support", "support"))
    return client
