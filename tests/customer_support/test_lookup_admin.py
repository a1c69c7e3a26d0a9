"""The admin for support: the "Customer lookup" page, and read-only entitlements, customers and notifications."""

import re
import time

import pytest
from django.contrib.auth.models import User

from fulfillment.models import Customer, Entitlement
from notifications.models import Notification
from tests.audit.pii import assert_no_pii
from tests.customer_support.conftest import BUYER_EMAIL, BUYER_USERNAME, staff_create

LOOKUP = "/admin/support/lookup/"
T = int(time.time()) - 3600
pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_admin(client):
    client.force_login(staff_create("olivia-operator", "operators"))
    return client


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def _without_echo(html: str, term: str) -> str:
    """The page minus the one place it may show the term: the search box's value."""
    echo = f'value="{term}"'
    assert html.count(echo) == 1
    return html.replace(echo, "")


class TestLookupPage:
    def test_support_finds_it_in_the_admin_index_under_support(self, support_admin):
        html = _html(support_admin.get("/admin/"))

        assert 'class="app-support module' in html and ">Support</a>" in html
        assert f'href="{LOOKUP}"' in html and "Customer lookup" in html

    def test_operators_neither_see_nor_open_it(self, operator_admin):
        assert f'href="{LOOKUP}"' not in _html(operator_admin.get("/admin/"))
        assert operator_admin.get(LOOKUP, {"q": BUYER_EMAIL}).status_code == 403

    def test_anonymous_visitors_are_sent_to_the_login_page(self, client):
        response = client.get(LOOKUP)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")

    def test_the_page_has_no_object_pages(self, support_admin):
        # The model behind the page has no table: an object URL is a 404, never a database error.
        assert support_admin.get("/admin/support/lookup/1/change/").status_code == 404
        assert support_admin.get("/admin/support/lookup/add/").status_code == 404

    def test_an_empty_search_shows_the_search_box(self, support_admin):
        html = _html(support_admin.get(LOOKUP))
        assert 'name="q"' in html and 'id="lookup-timeline"' not in html

    def test_it_shows_the_story_newest_first_with_links_support_may_open(self, support_admin, story, buyer):
        ids = story(T)

        html = _html(support_admin.get(LOOKUP, {"q": BUYER_EMAIL}))

        assert 'id="lookup-summary"' in html and 'id="lookup-timeline"' in html
        assert re.search(r'id="active-entitlements">\s*1\b', html)
        rows = re.findall(r'<tr class="kind-(\w+)">(.*?)</tr>', html, flags=re.S)
        times = [re.search(r'class="when">([^<]+)<', row).group(1) for _, row in rows]
        assert times == sorted(times, reverse=True)
        assert {kind for kind, _ in rows} >= {"event", "audit", "entitlement", "notification", "refund"}
        assert f'href="/admin/webhooks/webhookevent/{ids["refund"]}/change/"' in html
        assert re.search(r'href="/admin/audit/auditentry/\d+/change/"', html)
        assert re.search(r'href="/admin/fulfillment/entitlement/\d+/change/"', html)
        assert re.search(r'href="/admin/notifications/notification/[0-9a-f-]+/change/"', html)
        assert ids["other"] not in html
        assert "/admin/webhooks/deadletter/" not in html  # support never opens dead letters

    def test_the_chips_narrow_the_timeline_to_one_kind(self, support_admin, story):
        story(T)

        html = _html(support_admin.get(LOOKUP, {"q": "cus_CAROL", "kind": "notifications"}))

        assert {kind for kind in re.findall(r'<tr class="kind-(\w+)">', html)} == {"notification"}
        assert 'class="selected">Notifications<span>' in html

    def test_the_page_echoes_the_term_and_no_other_personal_data(self, support_admin, story):
        story(T)

        by_email = _without_echo(_html(support_admin.get(LOOKUP, {"q": BUYER_EMAIL})), BUYER_EMAIL)
        by_customer = _html(support_admin.get(LOOKUP, {"q": "cus_CAROL"}))

        assert "cus_CAROL" in by_email  # the story was found
        assert_no_pii([by_email, by_customer], [BUYER_EMAIL, BUYER_USERNAME, "dave.other@example.org"])

    def test_a_term_that_finds_nothing_says_so(self, support_admin):
        html = _html(support_admin.get(LOOKUP, {"q": "nobody@example.org"}))
        assert 'id="lookup-nothing"' in html

    def test_a_malformed_term_is_explained_not_a_500(self, support_admin):
        html = _html(support_admin.get(LOOKUP, {"q": "x" * 300}))
        assert 'id="lookup-error"' in html


class TestSupportReadsEntitlementsCustomersAndNotifications:
    def test_support_views_them_read_only_and_never_the_buyer_s_email_or_username(self, support_admin, story):
        story(T)
        entitlement = Entitlement.objects.filter(customer__provider_customer_id="cus_CAROL").first()
        customer = Customer.objects.get(provider_customer_id="cus_CAROL")
        notification = Notification.objects.filter(user__username=BUYER_USERNAME).first()
        pages = [
            "/admin/fulfillment/entitlement/", f"/admin/fulfillment/entitlement/{entitlement.pk}/change/",
            "/admin/fulfillment/customer/", f"/admin/fulfillment/customer/{customer.pk}/change/",
            "/admin/notifications/notification/", f"/admin/notifications/notification/{notification.pk}/change/",
        ]

        htmls = [_html(support_admin.get(page)) for page in pages]

        assert_no_pii(htmls, [BUYER_EMAIL, BUYER_USERNAME, "dave.other@example.org"])
        for html in htmls:
            assert 'name="_save"' not in html  # nothing to save
        assert "Revoke selected" not in htmls[0]  # the audited actions are for operators
        assert entitlement.key in htmls[1] and "cus_CAROL" in htmls[3]

    def test_support_cannot_change_them(self, support_admin, story):
        story(T)
        entitlement = Entitlement.objects.filter(status="active").first()
        customer = Customer.objects.get(provider_customer_id="cus_CAROL")
        other = User.objects.create_user("someone-else")

        support_admin.post(f"/admin/fulfillment/customer/{customer.pk}/change/", {"user": other.pk, "note": "move"})
        refused = support_admin.post("/admin/fulfillment/entitlement/", {
            "action": "revoke", "_selected_action": [entitlement.pk], "apply": "Revoke", "note": "no",
        })

        customer.refresh_from_db()
        entitlement.refresh_from_db()
        assert customer.user.username == BUYER_USERNAME
        assert entitlement.status == "active"
        assert refused.status_code in (200, 302, 403)
