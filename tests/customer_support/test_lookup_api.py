"""GET /api/v1/customers/lookup/?q= — a customer's whole story for support, PII-free, in bounded queries."""

import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.services import audit_entry_append
from support.selectors import customer_timeline
from tests.audit.pii import assert_no_pii
from tests.customer_support.conftest import BUYER_EMAIL, BUYER_USERNAME
from tests.fulfillment import stripe_events as se

URL = "/api/v1/customers/lookup/"
T = int(time.time()) - 3600
pytestmark = pytest.mark.django_db


def _lookup(client, q: str) -> dict:
    response = client.get(URL, {"q": q})
    assert response.status_code == 200, response.content
    return response.json()


def _event_types(body: dict) -> list[str]:
    return [item["title"] for item in body["items"] if item["kind"] == "event"]


def _assert_newest_first(body: dict) -> None:
    times = [item["at"] for item in body["items"]]
    assert times, "an empty timeline"
    assert times == sorted(times, reverse=True)


class TestTheStory:
    def test_found_by_email_it_holds_the_events_entitlements_notifications_and_audit_entries(self, support_client, story, buyer):
        ids = story(T)

        body = _lookup(support_client, f"  {BUYER_EMAIL.title()} ")

        assert body["query"] == BUYER_EMAIL.title()
        assert "email" in body["matched_kinds"]
        assert body["user_ids"] == [buyer.pk]
        assert body["customer_ids"] == ["cus_CAROL"]
        assert {"pi_CAROL_1", "pi_CAROL_2"} <= set(body["payment_ids"])
        assert sorted(_event_types(body)) == ["charge.refunded", "checkout.session.completed", "checkout.session.completed"]
        events = {item["links"]["event"] for item in body["items"] if item["kind"] == "event"}
        assert events == {ids["paid"], ids["addon"], ids["refund"]}  # never the other buyer's
        _assert_newest_first(body)
        assert _event_types(body)[0] == "charge.refunded"

        entitlements = {(row["key"], row["status"], row["payment"]) for row in body["entitlements"]}
        assert entitlements == {
            ("pro", "revoked", "pi_CAROL_1"), ("reports", "revoked", "pi_CAROL_1"), ("addon", "active", "pi_CAROL_2"),
        }
        revoked = [item for item in body["items"] if item["kind"] == "entitlement" and item["status"] == "revoked"]
        assert {item["reason"] for item in revoked} == {"refunded"}
        assert {item["title"] for item in body["items"] if item["kind"] == "refund"} == {"payment refunded"}
        templates = sorted(item["detail"]["template"] for item in body["items"] if item["kind"] == "notification")
        assert "access_revoked" in templates and templates.count("access_granted") >= 2
        actions = {item["title"] for item in body["items"] if item["kind"] == "audit"}
        assert {"webhook.received", "entitlement.granted", "entitlement.revoked", "notification.sent"} <= actions
        assert body["counts"]["active_entitlements"] == 1
        assert body["capped"] == [] and body["truncated"] is False

    def test_found_by_provider_customer_id(self, support_client, story, buyer):
        ids = story(T)

        body = _lookup(support_client, "cus_CAROL")

        assert "customer" in body["matched_kinds"]
        assert {item["links"]["event"] for item in body["items"] if item["kind"] == "event"} == {
            ids["paid"], ids["addon"], ids["refund"],
        }
        assert body["user_ids"] == [buyer.pk]
        _assert_newest_first(body)

    def test_found_by_payment_id(self, support_client, story):
        ids = story(T)

        body = _lookup(support_client, "pi_CAROL_1")

        assert "payment" in body["matched_kinds"]
        found = {item["links"]["event"] for item in body["items"] if item["kind"] == "event"}
        assert {ids["paid"], ids["refund"]} <= found and ids["other"] not in found
        assert "cus_CAROL" in body["customer_ids"]
        _assert_newest_first(body)

    def test_a_refund_that_arrived_before_its_payment_shows_the_blocked_grant_and_why(self, support_client, catalog, buyer, deliver):
        deliver(se.charge_refunded(charge_id="ch_5", created=T + 10, payment_intent="pi_EARLY"))
        paid, _ = deliver(se.checkout_completed(
            session_id="cs_5", created=T, price_id="price_addon", email=BUYER_EMAIL, customer="cus_CAROL", payment_intent="pi_EARLY",
        ))

        body = _lookup(support_client, BUYER_EMAIL)

        blocked = [item for item in body["items"] if item["kind"] == "entitlement"]
        assert [(item["status"], item["reason"]) for item in blocked] == [("blocked", "refunded")]
        assert [item["detail"]["payment"] for item in body["items"] if item["kind"] == "refund"] == ["pi_EARLY"]
        assert paid in {item["links"]["event"] for item in body["items"] if item["kind"] == "event"}
        assert body["counts"]["active_entitlements"] == 0

    @pytest.mark.parametrize("order", [(0, 1, 0, 1), (1, 0, 1, 0), (1, 1, 0, 0), (0, 0, 1, 1)])
    def test_a_duplicated_stream_in_any_order_tells_one_story(self, support_client, catalog, buyer, deliver, order):
        stream = [
            se.checkout_completed(session_id="cs_7", created=T, price_id="price_addon", email=BUYER_EMAIL, customer="cus_CAROL",
                                  payment_intent="pi_SHUF"),
            se.charge_refunded(charge_id="ch_7", created=T + 30, payment_intent="pi_SHUF"),
        ]
        for index in order:
            deliver(stream[index])

        body = _lookup(support_client, BUYER_EMAIL)

        assert _event_types(body).count("checkout.session.completed") == 1  # a redelivery is one stored event
        # The refund carries no email: it joins the story through the payment id its audit entry shares.
        assert _event_types(body).count("charge.refunded") == 1
        [entitlement] = body["entitlements"]
        assert (entitlement["key"], entitlement["active"], entitlement["revoke_reason"]) == ("addon", False, "refunded")
        assert [item["detail"]["payment"] for item in body["items"] if item["kind"] == "refund"] == ["pi_SHUF"]
        assert body["payment_ids"] == ["pi_SHUF"] and body["customer_ids"] == ["cus_CAROL"]
        _assert_newest_first(body)
        body.pop("query")
        assert_no_pii([json.dumps(body)], [BUYER_EMAIL, BUYER_USERNAME])

    def test_an_unknown_term_finds_nothing(self, support_client, story):
        story(T)

        body = _lookup(support_client, "nobody@example.org")

        assert body["items"] == [] and body["entitlements"] == [] and body["matched_kinds"] == []


class TestTheHop:
    def test_an_entry_that_carries_only_the_payment_joins_the_story_of_the_buyer_found_by_email(self, support_client):
        granted = audit_entry_append(action="entitlement.granted", subjects={"email": BUYER_EMAIL, "payment_intent": "pi_H"})
        refunded = audit_entry_append(action="entitlement.revoked", subjects={"payment_intent": "pi_H"}, data={"reason": "refunded"})
        unrelated = audit_entry_append(action="entitlement.granted", subjects={"email": "dave.other@example.org"})

        body = _lookup(support_client, BUYER_EMAIL)

        found = [item["links"]["audit_entry"] for item in body["items"] if item["kind"] == "audit"]
        assert found == [refunded.id, granted.id]
        assert unrelated.id not in found
        assert body["matched_kinds"] == ["email"]

    def test_it_says_when_a_read_hit_its_cap(self, support_client, monkeypatch):
        monkeypatch.setattr("support.selectors.SEED_ENTRIES_MAX", 2)
        for _ in range(3):
            audit_entry_append(action="notification.sent", subjects={"email": BUYER_EMAIL})

        body = _lookup(support_client, BUYER_EMAIL)

        assert "audit_entries" in body["capped"]
        assert len([item for item in body["items"] if item["kind"] == "audit"]) == 2


class TestNoPersonalData:
    def test_the_answer_never_holds_the_email_or_the_username(self, support_client, story):
        story(T)

        for q in (BUYER_EMAIL, "cus_CAROL", "pi_CAROL_1"):
            body = _lookup(support_client, q)
            assert body.pop("query") == q  # the term typed is the one value echoed
            assert body["items"]
            assert_no_pii([json.dumps(body)], [BUYER_EMAIL, BUYER_USERNAME, "dave.other@example.org"])


class TestQueries:
    def test_the_number_of_queries_does_not_grow_with_the_story(self, catalog, buyer, deliver):
        def count() -> int:
            with CaptureQueriesContext(connection) as queries:
                timeline = customer_timeline(q=BUYER_EMAIL)
            assert timeline.items
            return len(queries)

        deliver(se.checkout_completed(session_id="cs_a", created=T, price_id="price_pro", email=BUYER_EMAIL, customer="cus_Q",
                                      payment_intent="pi_Q0"))
        short = count()
        for n in range(1, 6):
            deliver(se.checkout_completed(session_id=f"cs_{n}", created=T + n, price_id="price_addon", email=BUYER_EMAIL,
                                          customer="cus_Q", payment_intent=f"pi_Q{n}"))
            deliver(se.charge_refunded(charge_id=f"ch_{n}", created=T + 100 + n, payment_intent=f"pi_Q{n}"))
        long = count()

        assert long == short
        assert short <= 15

    def test_a_long_story_stays_within_the_query_budget(self, support_client, story, django_assert_max_num_queries):
        story(T)
        with django_assert_max_num_queries(20):
            _lookup(support_client, "cus_CAROL")


class TestAccess:
    def test_anonymous_requests_get_401(self, client):
        assert client.get(URL, {"q": BUYER_EMAIL}).status_code == 401

    def test_operators_and_services_get_403(self, operator_client, services_client):
        assert operator_client.get(URL, {"q": BUYER_EMAIL}).status_code == 403
        assert services_client.get(URL, {"q": BUYER_EMAIL}).status_code == 403

    def test_support_and_superusers_may_look_up(self, support_client, superuser_client):
        assert support_client.get(URL, {"q": BUYER_EMAIL}).status_code == 200
        assert superuser_client.get(URL, {"q": BUYER_EMAIL}).status_code == 200

    def test_it_is_read_only(self, support_client):
        assert support_client.post(f"{URL}?q=x", {}, format="json").status_code == 405

    @pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "   "}, {"q": "x" * 256}, {"q": "cus_\x01"}, {"q": "a\x00b"}])
    def test_a_missing_blank_or_malformed_term_is_a_400(self, support_client, params):
        response = support_client.get(URL, params)

        assert response.status_code == 400
        assert response.json()["error"] == "invalid_query"
