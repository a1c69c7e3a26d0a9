"""The outside tester's findings on the customer lookup (issue 12): each test fails without its fix."""

import json
import re
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache

from audit.models import AuditEntry
from config.display import id_display, source_display
from fulfillment.models import Customer
from tests.customer_support.conftest import BUYER_EMAIL
from tests.fulfillment import stripe_events as se

URL = "/api/v1/customers/lookup/"
AUDIT_URL = "/api/v1/audit/"
ENTITLEMENTS_URL = "/api/v1/entitlements/"
LOOKUP_PAGE = "/admin/support/lookup/"
T = int(time.time()) - 3600
# Sender-chosen ids that are emails (Adyen's shopperReference; a Stripe `customer`/`payment_intent`).
EMAIL_CUSTOMER = "erin.shopper@example.net"
EMAIL_PAYMENT = "erin.pays@example.net"
MASKED = re.compile(r"^\[email-like id …[0-9a-f]{4}\]$")
pytestmark = pytest.mark.django_db


@pytest.fixture
def email_ids(catalog, buyer, deliver):
    """A paid checkout whose customer id and payment id are both emails."""
    paid, _ = deliver(se.checkout_completed(
        session_id="cs_e1", created=T, price_id="price_pro", email=BUYER_EMAIL, customer=EMAIL_CUSTOMER,
        payment_intent=EMAIL_PAYMENT,
    ))
    return paid


def _no_email(text: str) -> None:
    for value in (EMAIL_CUSTOMER, EMAIL_PAYMENT, BUYER_EMAIL):
        assert value not in text and value.upper() not in text


class TestIdsThatAreEmails:
    def test_the_display_helper_keeps_plain_ids_and_masks_personal_ones_distinctly(self):
        assert id_display("cus_NffrFeUfNV2Hib") == "cus_NffrFeUfNV2Hib"
        assert id_display("pi_3MtwBwLkdIwHu7ix28a3tqPa") == "pi_3MtwBwLkdIwHu7ix28a3tqPa"
        masked, other = id_display(EMAIL_CUSTOMER), id_display(EMAIL_PAYMENT)
        assert MASKED.match(masked) and MASKED.match(other) and masked != other
        assert id_display(EMAIL_CUSTOMER) == masked  # stable: support can tell ids apart
        assert source_display(f"payment:{EMAIL_PAYMENT}") == f"payment:{other}"
        assert source_display("subscription:sub_1") == "subscription:sub_1"

    def test_the_lookup_answer_masks_them_and_never_lists_a_placeholder(self, support_client, email_ids):
        for term in (BUYER_EMAIL, EMAIL_CUSTOMER, EMAIL_PAYMENT):
            response = support_client.get(URL, {"q": term})
            assert response.status_code == 200
            body = response.json()
            assert body["items"], term
            assert body["customer_ids"] == [id_display(EMAIL_CUSTOMER)]
            assert id_display(EMAIL_PAYMENT) in body["payment_ids"]
            assert not [value for value in body["payment_ids"] + body["customer_ids"] if value == "[dropped]"]
            assert {row["customer"] for row in body["entitlements"]} == {id_display(EMAIL_CUSTOMER)}
            assert {row["payment"] for row in body["entitlements"]} == {id_display(EMAIL_PAYMENT)}
            body.pop("query")
            _no_email(json.dumps(body))
        # Found by the email-like id itself (its hash), as what it is.
        assert "customer" in support_client.get(URL, {"q": EMAIL_CUSTOMER}).json()["matched_kinds"]

    def test_the_admin_lookup_page_masks_them(self, support_admin, email_ids):
        response = support_admin.get(LOOKUP_PAGE, {"q": BUYER_EMAIL})
        html = response.content.decode()
        assert response.status_code == 200 and id_display(EMAIL_CUSTOMER) in html
        _no_email(html.replace(BUYER_EMAIL, ""))  # the typed term is the only value echoed

    def test_the_customers_admin_list_detail_and_entitlements_admin_mask_them(self, support_admin, email_ids):
        customer = Customer.objects.get(provider_customer_id=EMAIL_CUSTOMER)
        assert str(customer) == f"stripe:{id_display(EMAIL_CUSTOMER)}"
        listing = support_admin.get("/admin/fulfillment/customer/")
        detail = support_admin.get(f"/admin/fulfillment/customer/{customer.pk}/change/")
        entitlements = support_admin.get("/admin/fulfillment/entitlement/")
        for response in (listing, detail, entitlements):
            assert response.status_code == 200
            _no_email(response.content.decode())
        assert id_display(EMAIL_CUSTOMER) in listing.content.decode()
        title = re.search(r"<title>(.*?)</title>", detail.content.decode(), re.DOTALL).group(1)
        assert id_display(EMAIL_CUSTOMER) in title
        # Searching by the id itself still finds the row.
        found = support_admin.get("/admin/fulfillment/customer/", {"q": EMAIL_CUSTOMER})
        assert f"/admin/fulfillment/customer/{customer.pk}/change/" in found.content.decode()

    def test_the_entitlements_api_filters_by_the_real_id_and_answers_it_masked(self, support_client, email_ids):
        response = support_client.get(ENTITLEMENTS_URL, {"customer": EMAIL_CUSTOMER})
        assert response.status_code == 200
        rows = response.json()["results"]
        assert rows and {row["customer"] for row in rows} == {id_display(EMAIL_CUSTOMER)}
        assert {row["source"] for row in rows} == {f"payment:{id_display(EMAIL_PAYMENT)}"}
        _no_email(response.content.decode())


class TestGrantedLinks:
    def test_a_granted_item_links_the_granting_event_and_the_revoked_item_the_refund(self, support_client, story):
        ids = story(T)

        body = support_client.get(URL, {"q": "cus_CAROL"}).json()

        pro = [item for item in body["items"] if item["kind"] == "entitlement" and item["detail"]["key"] == "pro"]
        links = {item["status"]: item["links"]["event"] for item in pro}
        assert links == {"granted": ids["paid"], "revoked": ids["refund"]}
        addon = [item for item in body["items"] if item["kind"] == "entitlement" and item["detail"]["key"] == "addon"]
        assert [item["links"]["event"] for item in addon] == [ids["addon"]]


REFUSED = ["\x00", "a\x00b", "pi_1\n", "\n", "pi\u0085", "pi\u2028", "\u202epi_1", "pi\u200b1", "pi\ue000", "pi\U000e0001",
           "pi\u0378"]


class TestQueryValidation:
    @pytest.mark.parametrize("term", REFUSED)
    def test_the_api_refuses_control_format_and_separator_characters(self, support_client, term):
        response = support_client.get(URL, {"q": term})

        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_query"
        assert "control" in body["detail"] and "at most" not in body["detail"]
        assert not term.strip() or term.strip() not in response.content.decode()  # never echoed
        assert not AuditEntry.objects.filter(action="customer.looked_up").exists()

    @pytest.mark.parametrize("term", ["\x00", "pi_1\n", "\u202epi_1", "pi\u2028"])
    def test_the_audit_api_refuses_the_same_terms_with_the_same_answer(self, support_client, term):
        response = support_client.get(AUDIT_URL, {"q": term})

        assert response.status_code == 400
        assert response.json()["error"] == "invalid_query" and "control" in response.json()["detail"]

    def test_the_audit_api_still_searches_and_ignores_a_blank_q(self, support_client):
        assert support_client.get(AUDIT_URL, {"q": "cus_NONE"}).status_code == 200
        assert support_client.get(AUDIT_URL, {"q": "  "}).status_code == 200
        assert support_client.get(AUDIT_URL, {"q": "x" * 256}).json()["error"] == "invalid_query"

    @pytest.mark.parametrize("term", ["\x00", "pi_1\n", "\u202epi_1"])
    def test_the_admin_page_refuses_them_with_a_message_and_no_echo(self, support_admin, term):
        response = support_admin.get(LOOKUP_PAGE, {"q": term})

        html = response.content.decode()
        assert response.status_code == 200 and 'id="lookup-error"' in html and "control" in html
        assert "\x00" not in html and "\u202e" not in html and 'value="pi_1' not in html

    def test_a_user_id_with_a_leading_zero_is_not_taken_for_the_user(self, support_client, catalog, buyer, deliver):
        deliver(se.checkout_completed(session_id="cs_u", created=T, price_id="price_pro", user_id=buyer.pk, customer="cus_U",
                                      payment_intent="pi_U"))
        exact = support_client.get(URL, {"q": str(buyer.pk)}).json()
        padded = support_client.get(URL, {"q": f"0{buyer.pk}"}).json()

        assert "user" in exact["matched_kinds"] and exact["items"]
        # Whatever a term finds, the answer says what it was found as.
        assert padded["matched_kinds"] or not (padded["items"] or padded["entitlements"])


@pytest.fixture
def lookup_rate(monkeypatch):
    cache.clear()
    monkeypatch.setattr(
        "rest_framework.throttling.SimpleRateThrottle.THROTTLE_RATES", {"user": None, "anon": None, "customer_lookup": "2/min"}
    )
    yield
    cache.clear()


class TestThrottle:
    def test_the_default_rate_is_read_from_the_environment(self):
        from config import settings as project_settings

        source = Path(project_settings.__file__).read_text()
        assert 'env.str("API_THROTTLE_CUSTOMER_LOOKUP", default="30/min")' in source
        assert "API_THROTTLE_CUSTOMER_LOOKUP=" in (Path(project_settings.__file__).parent.parent / ".env.example").read_text()

    def test_lookups_past_the_rate_get_429_with_retry_after_per_account(self, support_client, lookup_rate):
        statuses = [support_client.get(URL, {"q": "cus_X"}).status_code for _ in range(2)]
        throttled = support_client.get(URL, {"q": "cus_X"})

        assert statuses == [200, 200]
        assert throttled.status_code == 429
        assert 0 < int(throttled["Retry-After"]) <= 60
        assert throttled.json()["error"] == "throttled"
        # Only the lookup's budget is spent: the rest of the API still answers.
        assert support_client.get(AUDIT_URL).status_code == 200
        other = User.objects.create_user("support-2")
        other.groups.add(Group.objects.get(name="support"))
        support_client.force_authenticate(other)
        assert support_client.get(URL, {"q": "cus_X"}).status_code == 200


class TestNoStore:
    @pytest.mark.parametrize("path, params", [(URL, {"q": "cus_X"}), (URL, {"q": "\x00"}), (AUDIT_URL, {}), ("/api/v1/nope/", {})])
    def test_every_api_answer_is_no_store(self, support_client, path, params):
        response = support_client.get(path, params)

        assert response["Cache-Control"] == "no-store" and response["Pragma"] == "no-cache"

    def test_an_unauthenticated_answer_too(self, client):
        response = client.get(URL, {"q": "cus_X"})

        assert response.status_code == 401 and response["Cache-Control"] == "no-store"


class TestLookupsAreAudited:
    def test_an_api_lookup_leaves_one_entry_without_the_term_found_by_the_term(self, support_client, story):
        story(T)

        support_client.get(URL, {"q": BUYER_EMAIL})

        [entry] = AuditEntry.objects.filter(action="customer.looked_up")
        user = User.objects.get(username="support-1")
        assert entry.actor == str(user.pk)
        assert entry.data["via"] == "api" and entry.data["found"] is True
        assert "email" in entry.data["matched_kinds"] and entry.data["counts"]["entitlements"] == 3
        assert BUYER_EMAIL not in json.dumps(entry.data) and BUYER_EMAIL.lower() not in json.dumps(entry.data).lower()
        # "Who looked up this customer": the audit log's search by the term (any case) finds it.
        found = support_client.get(AUDIT_URL, {"q": BUYER_EMAIL.upper(), "action": "customer.looked_up"}).json()["results"]
        assert [row["id"] for row in found] == [entry.id]

    def test_the_trail_never_seeds_a_story(self, support_client):
        for _ in range(2):
            body = support_client.get(URL, {"q": "nobody@example.org"}).json()
        assert body["items"] == [] and body["matched_kinds"] == []
        assert AuditEntry.objects.filter(action="customer.looked_up").count() == 2

    def test_the_admin_page_leaves_one_too(self, support_admin, story):
        story(T)

        support_admin.get(LOOKUP_PAGE, {"q": "cus_CAROL"})

        [entry] = AuditEntry.objects.filter(action="customer.looked_up")
        assert entry.actor == str(User.objects.get(username="sam-support").pk) and entry.data["via"] == "admin"
