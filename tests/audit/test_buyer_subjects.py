"""A support search by the buyer's email finds the whole story, whatever order the events came in.

For every provider that fulfils payments, a payment and its full refund (and redeliveries of both)
are received through the real receive service, signed as the provider signs them, and processed in
every order. Afterwards support's `GET /api/v1/audit/?q=` finds, by the buyer's email, the payment's
`webhook.received` and the grant (`entitlement.granted` then `entitlement.revoked`), or the blocked
grant (`entitlement.blocked`) when the refund came first; by the payment id, the refund's
`webhook.received` too. Paddle's payloads carry no email: there the customer id (`ctm_…`) and the
user id stand in for it. Standard Webhooks events carry no payment (stored and ignored), so it has
no stream here. No subject is stored in clear and the chain still verifies.
"""

import io
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from audit.models import AuditEntry, AuditSubject
from audit.services import _entry_prepare, audit_entry_append
from config.blind_index import blind_index
from fulfillment.services import catalog_import
from providers import scheme_get
from providers.paddle import samples as paddle_samples
from providers.paypal import samples as paypal_samples
from providers.stripe import samples as stripe_samples
from tests.audit.pii import assert_no_pii, audit_table_texts
from tests.providers.adyen import notifications as adyen
from tests.providers.lemonsqueezy import events as lemon
from tests.providers.paypal.conftest import cert_server, cert_server_session, paypal_signature, pki  # noqa: F401  (fixtures)
from webhooks import endpoints, processing
from webhooks.models import WebhookEvent
from webhooks.processing import webhook_event_process
from webhooks.receiving import webhook_event_receive

pytestmark = pytest.mark.django_db

URL = "/api/v1/audit/"
BUYER_EMAIL = "Buyer.Issue12@Example.com"  # as the provider sends it; searched lower-case
T = datetime.now(UTC) - timedelta(hours=1)
REFUND_AT = T + timedelta(minutes=5)

STRIPE_SECRET = "whsec_issue12issue12issue12issue12"
PADDLE_SECRET = "pdl_ntfset_01hs0t3tw21j988db1pam5xg8m_GrOWLNef+vmtjJYq4mSnHNzvc8uWoJ1I"
LEMON_SECRET = "lemon-endpoint-secret"
PAYPAL_WEBHOOK_ID = "8PT597110X687430LKGECATA"

# Payment and refund with a redelivery of each, in every distinct order; and each once, both ways.
ORDERS = [("payment", "refund"), ("refund", "payment")] + sorted(
    set(itertools.permutations(["payment", "refund", "payment", "refund"]))
)


@dataclass
class Stream:
    """One buyer's payment and full refund at one provider, and what support searches by."""

    slug: str
    payment: bytes
    refund: bytes
    payment_id: str
    customer_id: str
    email: str | None  # None: the provider's payloads carry no email (Paddle)
    sign: object  # body -> headers, signed now as the provider signs


def _stripe(user, request) -> Stream:
    endpoints.webhook_endpoint_create(slug="stripe", scheme="stripe", secret=STRIPE_SECRET)
    catalog_import(data={"products": [{"provider": "stripe", "price_id": stripe_samples.SAMPLE_PRICE_ID,
                                       "entitlements": ["pro", "reports"]}]})
    session = stripe_samples.stripe_trigger_event("checkout.session.completed")["data"]["object"]
    session["customer_details"]["email"] = BUYER_EMAIL
    session["client_reference_id"] = str(user.pk)
    charge = stripe_samples.stripe_trigger_event("charge.refunded")["data"]["object"]
    charge.update(refunded=True, amount_refunded=charge["amount"], customer=session["customer"])
    assert charge["payment_intent"] == session["payment_intent"]
    scheme = scheme_get("stripe")
    return Stream(
        slug="stripe",
        payment=json.dumps(stripe_samples.stripe_event("checkout.session.completed", session, created=int(T.timestamp()))).encode(),
        refund=json.dumps(stripe_samples.stripe_event("charge.refunded", charge, created=int(REFUND_AT.timestamp()))).encode(),
        payment_id=session["payment_intent"], customer_id=session["customer"], email=BUYER_EMAIL,
        sign=lambda body: scheme.sign(secret=STRIPE_SECRET, body=body, timestamp=int(time.time()), event_id=""),
    )


def _paddle(user, request) -> Stream:
    endpoints.webhook_endpoint_create(slug="paddle", scheme="paddle", secret=PADDLE_SECRET)
    catalog_import(data={"products": [{"provider": "paddle", "price_id": paddle_samples.SAMPLE_PRICE_ID,
                                       "entitlements": ["pro", "reports"]}]})
    payment = paddle_samples.paddle_trigger_event("transaction.completed")
    payment["occurred_at"] = paddle_samples.rfc3339(T)
    payment["data"]["custom_data"] = {"user_id": str(user.pk)}
    refund = paddle_samples.paddle_trigger_event("adjustment.updated")
    refund["occurred_at"] = paddle_samples.rfc3339(REFUND_AT)
    assert refund["data"]["transaction_id"] == payment["data"]["id"]
    scheme = scheme_get("paddle")
    return Stream(
        slug="paddle", payment=json.dumps(payment).encode(), refund=json.dumps(refund).encode(),
        payment_id=payment["data"]["id"], customer_id=payment["data"]["customer_id"], email=None,
        sign=lambda body: scheme.sign(secret=PADDLE_SECRET, body=body, timestamp=int(time.time()), event_id=""),
    )


def _lemonsqueezy(user, request) -> Stream:
    endpoints.webhook_endpoint_create(slug="lemon", scheme="lemonsqueezy", secret=LEMON_SECRET)
    catalog_import(data={"products": [{"provider": "lemonsqueezy", "price_id": "101", "entitlements": ["pro", "reports"]}]})
    paid = lemon.order(order_id="1001", variant_id=101, user_id=user.pk, email=BUYER_EMAIL, customer_id=77,
                       updated_at=lemon.at(-3600))
    refunded = lemon.order("order_refunded", order_id="1001", variant_id=101, user_id=user.pk, email=BUYER_EMAIL,
                           customer_id=77, status="refunded", refunded_amount=1199, updated_at=lemon.at(-3300))
    scheme = scheme_get("lemonsqueezy")
    return Stream(
        slug="lemon", payment=json.dumps(paid).encode(), refund=json.dumps(refunded).encode(),
        payment_id="order:1001", customer_id="77", email=BUYER_EMAIL,
        sign=lambda body: scheme.sign(secret=LEMON_SECRET, body=body, timestamp=int(time.time()), event_id=""),
    )


def _paypal(user, request) -> Stream:
    pki_, server = request.getfixturevalue("pki"), request.getfixturevalue("cert_server")
    endpoints.webhook_endpoint_create(slug="paypal", scheme="paypal", secret=PAYPAL_WEBHOOK_ID)
    catalog_import(data={"products": [{"provider": "paypal", "price_id": paypal_samples.SAMPLE_SKU,
                                       "entitlements": ["pro", "reports"]}]})
    order = paypal_samples.paypal_sample_event("CHECKOUT.ORDER.COMPLETED", create_time=T)
    order["resource"]["payer"]["email_address"] = BUYER_EMAIL
    order["resource"]["purchase_units"][0]["custom_id"] = str(user.pk)
    refund = paypal_samples.paypal_sample_event("PAYMENT.CAPTURE.REFUNDED", create_time=REFUND_AT)

    def sign(body: bytes) -> dict:
        transmission_id, sent = str(uuid.uuid4()), datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": sent,
            "PAYPAL-TRANSMISSION-SIG": paypal_signature(pki_.signing_key, transmission_id=transmission_id,
                                                        transmission_time=sent, webhook_id=PAYPAL_WEBHOOK_ID, body=body),
            "PAYPAL-CERT-URL": server.url("cert.pem"),
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }

    return Stream(
        slug="paypal", payment=json.dumps(order).encode(), refund=json.dumps(refund).encode(),
        payment_id=paypal_samples.SAMPLE_CAPTURE_ID, customer_id=order["resource"]["payer"]["payer_id"],
        email=BUYER_EMAIL, sign=sign,
    )


def _adyen(user, request) -> Stream:
    endpoints.webhook_endpoint_create(slug="adyen", scheme="adyen", secret=adyen.KEY, mode="live")
    catalog_import(data={"products": [{"provider": "adyen", "price_id": "adyen-price-pro", "entitlements": ["pro", "reports"]}]})
    shopper = {"shopperReference": str(user.pk), "shopperEmail": BUYER_EMAIL}
    paid = adyen.item("AUTHORISATION", pspReference="7914073381342284",
                      additional={**shopper, "metadata.price_id": "adyen-price-pro"})
    refund = adyen.item("REFUND", additional=shopper)
    assert refund["originalReference"] == paid["pspReference"]
    return Stream(
        slug="adyen", payment=adyen.body(paid), refund=adyen.body(refund),  # signed inside the body by Adyen's library
        payment_id=paid["pspReference"], customer_id=str(user.pk), email=BUYER_EMAIL, sign=lambda body: {},
    )


STREAMS = {"stripe": _stripe, "paddle": _paddle, "lemonsqueezy": _lemonsqueezy, "paypal": _paypal, "adyen": _adyen}


@pytest.fixture
def buyer(db):
    return get_user_model().objects.create_user("buyer", email=BUYER_EMAIL.lower())


def _deliver(stream: Stream, body: bytes, django_capture_on_commit_callbacks) -> str:
    result = webhook_event_receive(slug=stream.slug, body=body, headers=stream.sign(body))
    # E-mails leave after the event commits: run those hooks, so their outcome is audited too.
    with django_capture_on_commit_callbacks(execute=True):
        webhook_event_process(event_id=result.event_id)
    return result.event_id


def _search(support_client, term: str) -> list[dict]:
    response = support_client.get(URL, {"q": term, "page_size": 500})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def _actions(rows: list[dict], **where) -> list[str]:
    return sorted(row["action"] for row in rows if all(row[key] == value for key, value in where.items()))


@pytest.mark.parametrize("order", ORDERS, ids=lambda order: "-".join(order))
@pytest.mark.parametrize("provider", sorted(STREAMS))
def test_a_search_by_the_buyer_finds_the_whole_story_in_any_order(
    provider, order, buyer, support_client, request, django_capture_on_commit_callbacks
):
    stream = STREAMS[provider](buyer, request)
    event_ids = {}
    for kind in order:
        event_ids.setdefault(kind, set()).add(_deliver(stream, getattr(stream, kind), django_capture_on_commit_callbacks))
    assert {kind: len(ids) for kind, ids in event_ids.items()} == {"payment": 1, "refund": 1}  # redeliveries stored once
    payment_event, refund_event = str(event_ids["payment"].pop()), str(event_ids["refund"].pop())
    refund_first = order[0] == "refund"

    # Paddle sends no email: its buyer is found by the provider customer id and by the user id.
    terms = [stream.email.lower()] if stream.email else [stream.customer_id, str(buyer.pk)]
    for term in terms:
        rows = _search(support_client, term)
        assert _actions(rows, event=payment_event) == (
            ["entitlement.blocked"] * 2 + ["webhook.received"] if refund_first
            else ["entitlement.granted"] * 2 + ["notification.sent"] * 2 + ["webhook.received"]
        ), term
        grants = [row for row in rows if row["action"].startswith("entitlement.")]
        if refund_first:
            assert {row["data"]["entitlement"] for row in grants} == {"pro", "reports"}
            assert {(row["data"]["reason"], row["data"]["blocking_event"]) for row in grants} == {("refunded", refund_event)}
            assert all(row["data"]["payment_intent"] == stream.payment_id for row in grants)
        else:
            assert _actions(rows, event=refund_event, action="entitlement.revoked") == ["entitlement.revoked"] * 2
            assert _actions(rows, event=refund_event, action="notification.sent") == ["notification.sent"] * 2
        assert stream.email is None or stream.email.lower() not in json.dumps(rows).lower()

    by_payment = _search(support_client, stream.payment_id)
    assert _actions(by_payment, action="webhook.received") == ["webhook.received"] * 2
    assert {row["event"] for row in by_payment if row["action"] == "webhook.received"} == {payment_event, refund_event}
    assert "entitlement.blocked" in _actions(by_payment) if refund_first else "entitlement.revoked" in _actions(by_payment)

    assert_no_pii(audit_table_texts(), [BUYER_EMAIL])
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert out.getvalue().splitlines()[-1].startswith(f"OK {AuditEntry.objects.count()} entries")


def test_the_search_by_email_also_finds_the_refund_when_the_refund_names_the_buyer(
    buyer, support_client, request, django_capture_on_commit_callbacks
):
    # Lemon Squeezy's refund carries the buyer's email itself: its webhook.received is found by it.
    stream = _lemonsqueezy(buyer, request)
    refund_event = _deliver(stream, stream.refund, django_capture_on_commit_callbacks)

    rows = _search(support_client, BUYER_EMAIL)

    assert _actions(rows) == ["webhook.received"] and rows[0]["event"] == str(refund_event)


def test_a_dead_lettered_event_carries_its_buyer(buyer, support_client, request, django_capture_on_commit_callbacks):
    stream = _stripe(buyer, request)
    event = json.loads(stream.payment)
    event["data"]["object"]["metadata"] = {"price_id": "price_not_in_catalog"}
    event_id = _deliver(stream, json.dumps(event).encode(), django_capture_on_commit_callbacks)

    rows = _search(support_client, BUYER_EMAIL)

    assert _actions(rows) == ["task.dead_lettered"] and rows[0]["event"] == str(event_id)
    assert _actions(_search(support_client, stream.payment_id)) == ["task.dead_lettered"]


def test_a_dead_letter_whose_facts_fail_is_recorded_without_subjects(buyer, request, monkeypatch):
    stream = _stripe(buyer, request)
    result = webhook_event_receive(slug=stream.slug, body=stream.payment, headers=stream.sign(stream.payment))

    def broken(**kwargs):
        raise ValueError("facts fail")

    monkeypatch.setattr(processing, "webhook_event_canonical_events", broken)
    assert processing.webhook_event_dead_letter(event_id=result.event_id, exc=RuntimeError("boom")) == "dead"

    entry = AuditEntry.objects.get(action="task.dead_lettered")
    assert str(entry.event_id) == str(result.event_id)
    assert not AuditSubject.objects.filter(entry=entry).exists()


def test_a_poison_event_is_dead_lettered_without_building_its_facts_again(buyer, request, settings, monkeypatch):
    stream = _stripe(buyer, request)
    result = webhook_event_receive(slug=stream.slug, body=stream.payment, headers=stream.sign(stream.payment))
    WebhookEvent.objects.filter(id=result.event_id).update(attempts=settings.WEBHOOK_MAX_ATTEMPTS)
    built = []
    monkeypatch.setattr(processing, "webhook_event_canonical_events", lambda **kwargs: built.append(kwargs) or [])

    assert webhook_event_process(event_id=result.event_id) == "dead"

    entry = AuditEntry.objects.get(action="task.dead_lettered")
    assert built == [] and not AuditSubject.objects.filter(entry=entry).exists()


def test_an_event_ignored_for_its_mode_carries_no_subjects(buyer, request, django_capture_on_commit_callbacks):
    stream = _stripe(buyer, request)
    event = json.loads(stream.payment)
    event["livemode"] = False  # the endpoint is live

    event_id = _deliver(stream, json.dumps(event).encode(), django_capture_on_commit_callbacks)

    entries = AuditEntry.objects.filter(event_id=event_id)
    assert sorted(entries.values_list("action", flat=True)) == ["event.ignored", "webhook.received"]
    assert not AuditSubject.objects.filter(entry__in=entries).exists()


def test_the_grant_and_its_revocation_carry_the_payment_and_the_subscription(
    buyer, support_client, request, django_capture_on_commit_callbacks
):
    stream = _paddle(buyer, request)  # a transaction of a subscription
    subscription = json.loads(stream.payment)["data"]["subscription_id"]
    _deliver(stream, stream.payment, django_capture_on_commit_callbacks)
    _deliver(stream, stream.refund, django_capture_on_commit_callbacks)

    for action in ("entitlement.granted", "entitlement.revoked"):
        entry = AuditEntry.objects.filter(action=action).first()
        pairs = set(AuditSubject.objects.filter(entry=entry).values_list("kind", "value_hash"))
        assert ("payment", blind_index(stream.payment_id, kind="payment")) in pairs
        assert ("subscription", blind_index(subscription, kind="subscription")) in pairs
        assert ("customer", blind_index(stream.customer_id, kind="customer")) in pairs
    assert "entitlement.granted" in _actions(_search(support_client, subscription))


# --- Several values of one kind on one entry -------------------------------------------------------------


def test_a_kind_may_hold_several_values_each_stored_once_as_its_hash(support_client):
    entry = audit_entry_append(
        action="entitlement.revoked",
        subjects={"payment": ["pi_1", "pi_2", "pi_1"], "email": ("Alice@Example.com", "alice@example.com"), "user": None},
    )

    pairs = sorted(AuditSubject.objects.filter(entry=entry).values_list("kind", "value_hash"))
    assert pairs == sorted([
        ("payment", blind_index("pi_1", kind="payment")), ("payment", blind_index("pi_2", kind="payment")),
        ("email", blind_index("alice@example.com", kind="email")),
    ])
    assert [row["id"] for row in _search(support_client, "pi_2")] == [entry.id]
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert out.getvalue().splitlines()[-1].startswith("OK 1 entries")


def test_a_single_value_hashes_into_the_chain_as_it_always_has():
    as_string = _entry_prepare(action="webhook.received", subjects={"email": "a@example.com", "customer": "cus_1"})
    as_lists = _entry_prepare(action="webhook.received", subjects={"email": ["a@example.com"], "customer": ("cus_1",)})

    assert as_string["subject_pairs"] == as_lists["subject_pairs"] == sorted([
        ("email", blind_index("a@example.com", kind="email")), ("customer", blind_index("cus_1", kind="customer")),
    ])


def test_a_grant_after_its_subscription_ended_is_recorded_as_blocked(
    buyer, support_client, request, django_capture_on_commit_callbacks
):
    stream = _paddle(buyer, request)
    canceled = paddle_samples.paddle_trigger_event("subscription.canceled")
    canceled["occurred_at"] = paddle_samples.rfc3339(REFUND_AT)
    canceled["data"]["custom_data"] = {"user_id": str(buyer.pk)}
    subscription = canceled["data"]["id"]
    assert json.loads(stream.payment)["data"]["subscription_id"] == subscription
    _deliver(stream, json.dumps(canceled).encode(), django_capture_on_commit_callbacks)
    payment_event = _deliver(stream, stream.payment, django_capture_on_commit_callbacks)

    rows = [row for row in _search(support_client, subscription) if row["event"] == str(payment_event)]

    assert _actions(rows) == ["entitlement.blocked"] * 2 + ["webhook.received"]
    blocked = [row["data"] for row in rows if row["action"] == "entitlement.blocked"]
    assert {(data["reason"], data["blocking_event"], data["source"]) for data in blocked} == {
        ("subscription_ended", None, f"subscription:{subscription}")
    }
