"""POST /webhooks/adyen/ through Django, then processing: one stored event per notification item,
`[accepted]` answers, all-or-nothing verification, and fulfilment against the catalog."""

import json

import pytest

from fulfillment.models import Entitlement
from fulfillment.selectors import entitlement_list
from providers import scheme_get
from providers.adyen import samples
from tests.conftest import post_json
from tests.providers.adyen import notifications as n
from webhooks.endpoints import endpoint_secret_add
from webhooks.models import WebhookEvent
from webhooks.processing import webhook_event_process

pytestmark = pytest.mark.django_db

URL = "/webhooks/adyen/"


def _post(client, body: bytes):
    return post_json(client, URL, body, {})


def _process_all() -> dict[str, str]:
    return {event.provider_event_id: webhook_event_process(event_id=event.id)
            for event in WebhookEvent.objects.order_by("received_at", "idempotency_key")}


def _active_keys(**filters) -> set[str]:
    return {row.key for row in entitlement_list(**filters)}


def _paid(user, psp: str = "7914073381342284", **fields) -> dict:
    return n.item("AUTHORISATION", pspReference=psp,
                  additional={"shopperReference": str(user.pk), "metadata.price_id": "adyen-price-pro"}, **fields)


def test_a_three_item_notification_stores_three_events_and_answers_accepted(client, adyen_endpoint):
    items = [n.item("AUTHORISATION"), n.item("CAPTURE"), n.item("RECURRING_CONTRACT")]
    body = n.body(*items)

    response = _post(client, body)

    assert response.status_code == 200
    assert response.content == b"[accepted]"
    events = WebhookEvent.objects.order_by("idempotency_key")
    assert [e.idempotency_key for e in events] == sorted(f"adyen:{n.key_of(i)}" for i in items)
    assert {e.event_type for e in events} == {"AUTHORISATION", "CAPTURE", "RECURRING_CONTRACT"}
    assert all(e.provider_created_at is not None for e in events)


def test_a_redelivery_is_still_accepted_and_stores_nothing_new(client, adyen_endpoint):
    body = n.body(n.item("AUTHORISATION"), n.item("CAPTURE"), n.item("RECURRING_CONTRACT"))
    _post(client, body)
    before = list(WebhookEvent.objects.values_list("id", flat=True))

    response = _post(client, body)

    assert (response.status_code, response.content) == (200, b"[accepted]")
    assert list(WebhookEvent.objects.values_list("id", flat=True)) == before


def test_a_redelivery_signed_under_a_new_key_is_not_a_conflict(client, adyen_endpoint):
    _post(client, n.body(n.item()))
    endpoint_secret_add(endpoint=adyen_endpoint, secret=n.OTHER_KEY)

    response = _post(client, n.body(n.item(), key=n.OTHER_KEY))

    assert (response.status_code, response.content) == (200, b"[accepted]")
    assert WebhookEvent.objects.count() == 1


def test_the_same_item_with_different_content_is_a_conflict(client, adyen_endpoint):
    _post(client, n.body(n.item()))

    response = _post(client, n.body(n.item(reason="changed")))

    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_conflict"


def test_one_tampered_item_among_valid_ones_is_refused_and_nothing_is_stored(client, adyen_endpoint):
    good = [n.sdk_signed(n.item("AUTHORISATION")), n.sdk_signed(n.item("CAPTURE"))]
    bad = n.sdk_signed(n.item("REFUND"))
    bad["amount"]["value"] = 1
    body = json.dumps(samples.adyen_notification(good[0], bad, good[1])).encode()

    response = _post(client, body)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_signature"}
    assert WebhookEvent.objects.count() == 0


def test_a_notification_signed_with_another_key_is_refused(client, adyen_endpoint):
    response = _post(client, n.body(n.item(), key=n.OTHER_KEY))

    assert response.json() == {"error": "invalid_signature"}
    assert WebhookEvent.objects.count() == 0


def test_an_unsigned_notification_is_missing_signature(client, adyen_endpoint):
    response = _post(client, json.dumps(samples.adyen_notification(n.item())).encode())

    assert (response.status_code, response.json()) == (400, {"error": "missing_signature"})


def test_hundreds_of_items_are_malformed_signature_not_a_server_error(client, adyen_endpoint):
    response = _post(client, n.body(*[n.item()] * 300))

    assert (response.status_code, response.json()) == (400, {"error": "malformed_signature"})


def test_a_body_that_is_not_json_is_an_invalid_payload(client, adyen_endpoint):
    response = _post(client, b"pspReference=7914073381342284&eventCode=AUTHORISATION")

    assert (response.status_code, response.json()) == (400, {"error": "invalid_payload"})


def test_a_processed_authorisation_grants_the_catalog_entitlements_to_the_shopper(client, adyen_endpoint, adyen_catalog, alice):
    _post(client, n.body(_paid(alice), n.item("RECURRING_CONTRACT")))

    statuses = _process_all()

    assert statuses == {"AUTHORISATION:7914073381342284:true": "processed", "RECURRING_CONTRACT:8315392938282740:true": "ignored"}
    assert _active_keys(user_id=alice.pk) == {"pro", "reports"}
    assert _active_keys(customer=str(alice.pk)) == {"pro", "reports"}
    assert Entitlement.objects.get(key="pro").payment_intent == "7914073381342284"


def test_a_later_refund_revokes_what_its_original_payment_granted_only(client, adyen_endpoint, adyen_catalog, alice):
    _post(client, n.body(_paid(alice, "7914073381342284"), _paid(alice, "7914073381342999", merchantReference="second")))
    _process_all()
    assert Entitlement.objects.filter(status="active").count() == 4

    _post(client, n.body(n.item("REFUND")))  # originalReference 7914073381342284, a day later
    _process_all()

    assert set(Entitlement.objects.filter(status="active").values_list("payment_intent", flat=True)) == {"7914073381342999"}
    assert _active_keys(user_id=alice.pk) == {"pro", "reports"}


def test_a_chargeback_revokes_its_original_payment(client, adyen_endpoint, adyen_catalog, alice):
    _post(client, n.body(_paid(alice)))
    _post(client, n.body(n.item("CHARGEBACK")))

    _process_all()

    assert _active_keys(user_id=alice.pk) == set()
    assert set(Entitlement.objects.values_list("revoke_reason", flat=True)) == {"disputed"}


def test_a_refund_arriving_before_its_authorisation_leaves_nothing_granted(client, adyen_endpoint, adyen_catalog, alice):
    assert _post(client, n.body(n.item("REFUND"))).content == b"[accepted]"
    assert _process_all() == {"REFUND:8515396117853457:true": "processed"}

    assert _post(client, n.body(_paid(alice))).content == b"[accepted]"
    _process_all()

    assert _active_keys(user_id=alice.pk) == set()
    assert set(Entitlement.objects.values_list("status", "revoke_reason")) == {("revoked", "refunded")}


def test_a_notification_from_the_other_mode_is_stored_and_ignored(client, adyen_endpoint, adyen_catalog, alice):
    response = _post(client, n.body(_paid(alice), live=False))

    assert response.content == b"[accepted]"
    assert list(_process_all().values()) == ["ignored"]
    assert Entitlement.objects.count() == 0


def test_a_sample_signed_like_send_test_webhook_fulfils_against_the_documented_price(client, adyen_endpoint, adyen_catalog):
    scheme = scheme_get("adyen")
    body, event_id = scheme.sample("AUTHORISATION", mode=adyen_endpoint.mode)

    response = _post(client, scheme.body_sign(secret=n.KEY, body=body))

    assert response.content == b"[accepted]"
    assert _process_all() == {event_id: "processed"}
    assert _active_keys(customer="YOUR_SHOPPER_REFERENCE") == {"pro"}


@pytest.mark.parametrize("live", [None, False, True, "FALSE", "False", "TRUE", "", "0", "no", "missing"])
def test_a_live_endpoint_fulfils_only_a_notification_that_says_exactly_live_true(client, adyen_endpoint, adyen_catalog, alice, live):
    payload = json.loads(n.body(_paid(alice)))
    if live == "missing":
        del payload["live"]
    else:
        payload["live"] = live  # outside the items' signatures, as Adyen sends it

    assert _post(client, json.dumps(payload).encode()).content == b"[accepted]"
    assert list(_process_all().values()) == ["ignored"]
    assert Entitlement.objects.count() == 0


def test_several_items_are_stored_all_or_nothing(client, adyen_endpoint):
    stored = n.item("AUTHORISATION", pspReference="1111111111111111")
    _post(client, n.body(stored))
    before = set(WebhookEvent.objects.values_list("idempotency_key", flat=True))

    # A new item beside one whose key is stored with other content: a conflict, and the new one too is not kept.
    response = _post(client, n.body(n.item("AUTHORISATION", pspReference="2222222222222222"), {**stored, "reason": "changed"}))

    assert response.status_code == 409 and response.json()["error"] == "idempotency_conflict"
    assert set(WebhookEvent.objects.values_list("idempotency_key", flat=True)) == before


@pytest.mark.parametrize("event_date", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1900-01-01T00:00:00Z"])
def test_an_event_date_out_of_range_is_stored_without_a_time_not_a_server_error(client, adyen_endpoint, event_date):
    response = _post(client, n.body(n.item("AUTHORISATION", eventDate=event_date)))

    assert response.status_code == 200 and response.content == b"[accepted]"
    assert WebhookEvent.objects.get().provider_created_at is None
