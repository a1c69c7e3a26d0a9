"""canonical_subjects: the buyer's identifiers of canonical events, the email decrypted in memory only."""

from datetime import UTC, datetime

from canonical.envelope import canonical_events_build
from canonical.facts import Fact, buyer
from canonical.subjects import canonical_subjects, subjects_merge

AT = datetime(2026, 12, 1, tzinfo=UTC)


def _events(*facts: Fact) -> list[dict]:
    return canonical_events_build(list(facts), idempotency_key="stripe:evt_1", source="/webhooks/stripe", correlation_id="c")


def _paid(**buyer_fields) -> Fact:
    return Fact(type="payhook.payment.succeeded.v1", subject="pi_1", time=AT, data={
        "buyer": buyer(**buyer_fields), "payment_intent": "pi_1", "source_object": "cs_1", "subscription": "sub_1",
        "price_ids": ["price_1"], "amount": 100, "currency": "usd", "access_until": None,
    })


def test_it_gives_every_identifier_of_the_buyer_with_the_email_in_clear_in_memory():
    events = _events(_paid(user_id=42, provider_customer_id="cus_1", email=" Alice@Example.com "))

    assert events[0]["data"]["buyer"]["email_encrypted"] and "Alice" not in str(events)
    assert canonical_subjects(events) == {
        "email": ["Alice@Example.com"], "customer": ["cus_1"], "user": ["42"], "payment": ["pi_1"], "subscription": ["sub_1"],
    }


def test_a_dispute_without_a_buyer_gives_its_payment_only():
    dispute = Fact(type="payhook.dispute.opened.v1", subject="pi_9", time=AT, data={
        "payment_intent": "pi_9", "charge": "ch_9", "dispute": "dp_9", "amount": 100, "currency": "usd", "reason": None,
    })

    assert canonical_subjects(_events(dispute)) == {"payment": ["pi_9"]}


def test_values_of_several_events_are_kept_once_each_in_order():
    second = Fact(type="payhook.payment.refunded.v1", subject="pi_2", time=AT, suffix="b", data={
        "buyer": buyer(provider_customer_id="cus_1"), "payment_intent": "pi_2", "charge": "ch_2", "amount": 1,
        "amount_refunded": 1, "currency": "usd", "full": True,
    })

    subjects = canonical_subjects(_events(_paid(provider_customer_id="cus_1"), second))

    assert subjects == {"customer": ["cus_1"], "payment": ["pi_1", "pi_2"], "subscription": ["sub_1"]}


def test_an_email_that_does_not_decrypt_is_left_out_and_nothing_raises():
    events = _events(_paid(provider_customer_id="cus_1", email="alice@example.com"))
    events[0]["data"]["buyer"]["email_encrypted"] = "not-a-fernet-token"

    assert canonical_subjects(events) == {"customer": ["cus_1"], "payment": ["pi_1"], "subscription": ["sub_1"]}


def test_no_events_no_subjects():
    assert canonical_subjects([]) == {}


def test_subjects_merge_joins_strings_and_lists_without_repeats():
    merged = subjects_merge({"user": "1", "email": ["a@x.test"]}, None, {"user": ["1", "2"], "payment": "pi_1", "customer": ""})

    assert merged == {"user": ["1", "2"], "email": ["a@x.test"], "payment": ["pi_1"]}
