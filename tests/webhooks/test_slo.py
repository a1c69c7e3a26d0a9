"""The "paid but not provisioned" SLO report (webhooks/slo.py), its periodic check and the gauges
/metrics computes from the database at scrape (webhooks/monitoring.py)."""

import logging
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from providers.stripe import samples
from tests.webhooks.factories import WebhookEndpointFactory, WebhookEventFactory
from webhooks.models import DeadLetter, WebhookEvent
from webhooks.monitoring import DatabaseGauges, provisioning_slo_check
from webhooks.slo import SloReport, UnprovisionedPayment, unprovisioned_payments

pytestmark = pytest.mark.django_db

BUYER_EMAIL = "slo.buyer.7731@example.org"
SLO = 300


@pytest.fixture(autouse=True)
def _slo(settings):
    settings.PROVISIONING_SLO_SECONDS = SLO


@pytest.fixture
def endpoint():
    return WebhookEndpointFactory(slug="shop", scheme="stripe")


def _payment(endpoint, *, age: float, status=WebhookEvent.Status.RECEIVED, event_type="checkout.session.completed"):
    payload = samples.stripe_trigger_event(event_type)
    if event_type == "checkout.session.completed":
        payload["data"]["object"]["customer_details"]["email"] = BUYER_EMAIL
        payload["data"]["object"]["customer_email"] = BUYER_EMAIL
    return WebhookEventFactory(
        endpoint=endpoint, event_type=event_type, payload=payload, provider_event_id=payload["id"], status=status,
        received_at=timezone.now() - timedelta(seconds=age),
    )


def test_an_old_unfinished_payment_counts_with_ids_types_and_times(endpoint):
    event = _payment(endpoint, age=SLO + 120)

    report = unprovisioned_payments()

    assert isinstance(report, SloReport)
    assert report.slo_seconds == SLO and report.count == 1
    assert report.oldest_age_seconds == pytest.approx(SLO + 120, abs=30)
    [payment] = report.payments
    assert isinstance(payment, UnprovisionedPayment)
    assert (payment.event_id, payment.endpoint, payment.event_type, payment.status) == (
        str(event.id), "shop", "checkout.session.completed", "received",
    )
    assert payment.paid_at is not None and payment.received_at == event.received_at


@pytest.mark.parametrize("status", ["received", "processing", "failed", "dead"])
def test_every_unfinished_status_counts(endpoint, status):
    _payment(endpoint, age=SLO + 60, status=status)

    assert unprovisioned_payments().count == 1


def test_a_subscription_activation_counts_as_a_payment(endpoint):
    _payment(endpoint, age=SLO + 60, event_type="customer.subscription.created")

    assert unprovisioned_payments().count == 1


@pytest.mark.parametrize("status", ["processed", "ignored"])
def test_a_finished_payment_does_not_count(endpoint, status):
    _payment(endpoint, age=SLO + 600, status=status)

    assert unprovisioned_payments().count == 0


def test_a_fresh_payment_does_not_count_yet(endpoint):
    _payment(endpoint, age=SLO - 60)

    report = unprovisioned_payments()

    assert (report.count, report.oldest_age_seconds, report.payments) == (0, None, [])


def test_an_old_unfinished_event_that_is_not_a_payment_does_not_count(endpoint):
    WebhookEventFactory(endpoint=endpoint, event_type="customer.created", received_at=timezone.now() - timedelta(hours=2))
    _payment(endpoint, age=SLO + 60, event_type="charge.refunded")

    assert unprovisioned_payments().count == 0


def test_an_unreadable_event_counts_only_when_it_is_dead(endpoint):
    for status in ("received", "dead"):
        event = WebhookEventFactory(endpoint=endpoint, status=status, received_at=timezone.now() - timedelta(hours=1))
        WebhookEvent.objects.filter(id=event.id).update(body_encrypted=b"not a ciphertext")

    report = unprovisioned_payments()

    assert report.count == 1 and report.payments[0].status == "dead" and report.payments[0].paid_at is None


def test_payments_are_newest_first_limited_and_the_count_counts_them_all(endpoint):
    events = [_payment(endpoint, age=SLO + 100 * n) for n in range(1, 5)]

    report = unprovisioned_payments(limit=2)

    assert report.count == 4
    assert [p.event_id for p in report.payments] == [str(events[0].id), str(events[1].id)]
    assert report.oldest_age_seconds == pytest.approx(SLO + 400, abs=30)


def test_the_report_carries_no_personal_data(endpoint):
    _payment(endpoint, age=SLO + 60)

    report = unprovisioned_payments()

    assert report.count == 1
    assert BUYER_EMAIL not in repr(report)


def test_the_check_logs_one_warning_line_with_the_count_the_oldest_age_and_ids_only(endpoint, caplog):
    events = [_payment(endpoint, age=SLO + 60), _payment(endpoint, age=SLO + 900)]
    _payment(endpoint, age=10)

    with caplog.at_level(logging.WARNING, logger="webhooks.monitoring"):
        result = provisioning_slo_check()

    [record] = [r for r in caplog.records if r.name == "webhooks.monitoring"]
    line = record.getMessage()
    assert record.levelno == logging.WARNING and "\n" not in line
    assert result["count"] == 2 and "2 payments" in line and f"past {SLO} s" in line
    assert f"oldest {result['oldest_age_seconds']:.0f} s" in line
    assert all(str(event.id) in line for event in events)
    assert BUYER_EMAIL not in line and "example" not in line


def test_the_check_is_silent_when_every_payment_is_provisioned(endpoint, caplog):
    _payment(endpoint, age=SLO + 60, status="processed")

    with caplog.at_level(logging.WARNING, logger="webhooks.monitoring"):
        assert provisioning_slo_check() == {"count": 0, "oldest_age_seconds": None}

    assert not [r for r in caplog.records if r.name == "webhooks.monitoring"]


# --- Gauges computed at scrape ---------------------------------------------------------------------------


def _gauges() -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseGauges())
    text = generate_latest(registry).decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_gauges_read_the_database_at_scrape(endpoint):
    assert _gauges() == {
        "payhook_database_gauges_up": 1.0, "payhook_events_backlog": 0.0, "payhook_oldest_unprocessed_event_age_seconds": 0.0,
        "payhook_dead_letters_open": 0.0, "payhook_oldest_open_dead_letter_age_seconds": 0.0,
        "payhook_unprovisioned_payments": 0.0, "payhook_oldest_unprovisioned_payment_age_seconds": 0.0,
        "payhook_provisioning_slo_seconds": float(SLO),
    }

    _payment(endpoint, age=SLO + 600)  # unprovisioned, in the backlog
    _payment(endpoint, age=30, status="processing")  # backlog only
    _payment(endpoint, age=50, status="failed")  # backlog only: fresh
    dead = _payment(endpoint, age=SLO + 60, status="dead")  # unprovisioned, not backlog: a dead letter
    _payment(endpoint, age=5000, status="processed")  # nothing
    DeadLetter.objects.create(unit_key=f"t:{dead.id}", task_name="t", event=dead, error_type="E",
                              last_failed_at=timezone.now() - timedelta(seconds=120))
    DeadLetter.objects.create(unit_key="t:closed", task_name="t", error_type="E", status=DeadLetter.Status.RESOLVED)

    gauges = _gauges()

    assert gauges["payhook_events_backlog"] == 3
    assert gauges["payhook_oldest_unprocessed_event_age_seconds"] == pytest.approx(SLO + 600, abs=30)
    assert gauges["payhook_dead_letters_open"] == 1
    assert gauges["payhook_oldest_open_dead_letter_age_seconds"] == pytest.approx(120, abs=30)
    assert gauges["payhook_unprovisioned_payments"] == 2
    assert gauges["payhook_oldest_unprovisioned_payment_age_seconds"] == pytest.approx(SLO + 600, abs=30)


def test_the_gauges_scrape_is_served_by_metrics_with_the_process_metrics(client, endpoint):
    _payment(endpoint, age=SLO + 60)

    text = client.get("/metrics").content.decode()

    assert "payhook_unprovisioned_payments 1.0" in text
    assert "payhook_events_backlog 1.0" in text
    assert "# TYPE payhook_webhook_events_total counter" in text
    assert BUYER_EMAIL not in text


def test_a_database_error_leaves_the_scrape_answering_without_the_database_gauges(monkeypatch):
    def unavailable(**kwargs):
        raise OperationalError("database away")

    monkeypatch.setattr("webhooks.monitoring.dead_letter_stats", unavailable)

    assert _gauges() == {"payhook_database_gauges_up": 0.0}
