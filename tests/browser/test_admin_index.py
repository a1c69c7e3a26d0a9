"""An operator opens the admin index after a realistic day and reads it in a real browser (Debian's Chromium).

The day: a daily traffic curve, a missing catalog price that dead-lettered checkouts mid-morning
(mostly replayed after the fix, a few still open), a worker outage in the evening that let the
backlog age for an hour, and two paid checkouts still waiting for their entitlement (the SLO row).
`PAYHOOK_REFRESH_SCREENSHOTS=1` writes docs/screenshots/admin-index.png.
"""

import math
from datetime import timedelta

import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By

from tests.browser.conftest import PASSWORD, admin_log_in
from tests.deadletters.factories import dead_letter_build, event_build, staff_user_create
from webhooks import dashboard, endpoints, slo
from webhooks.models import DeadLetter, WebhookEvent

pytestmark = pytest.mark.integration

SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)
HOUR = timedelta(hours=1)


def _day_seed(endpoint) -> dict:
    """A day of events and dead letters ending now; returns what the SLO report should name."""
    window = dashboard.hour_window()
    now, events, dead_letters = window.now, [], []
    for index, hour in enumerate(window.hours):
        local = (hour.hour + 1) % 24  # a European shop: busiest in its afternoon
        volume = int(24 + 110 * max(0.0, math.sin(math.pi * (local - 6) / 17)))
        span = min(HOUR, now - hour)
        for n in range(volume if index < 23 else int(volume * span / HOUR)):
            received = hour + span * (n + 0.5) / volume
            event = event_build(endpoint=endpoint, received_at=received,
                                status=WebhookEvent.Status.IGNORED if n % 11 == 3 else WebhookEvent.Status.PROCESSED,
                                event_type="invoice.paid" if n % 3 else "checkout.session.completed")
            event.processed_at = received + (2 + n % 5) * SECOND
            if window.hours[16] + 10 * MINUTE <= received < window.hours[17] + 5 * MINUTE:
                event.processed_at = window.hours[17] + 12 * MINUTE  # the worker outage
            events.append(event)
        if index in (8, 9):  # a price missing from the catalog
            for n in range(9):
                failed = hour + (6 * n + 3) * MINUTE
                event = event_build(endpoint=endpoint, received_at=failed - 40 * SECOND,
                                    event_type="checkout.session.completed", status=WebhookEvent.Status.DEAD)
                row = dead_letter_build(event=event, failed_at=failed)
                if n % 5:  # replayed after the catalog was fixed
                    event.status, event.processed_at = WebhookEvent.Status.PROCESSED, window.hours[12] + 25 * MINUTE
                    row.status, row.acted_at = DeadLetter.Status.REPLAYED, window.hours[12] + 20 * MINUTE
                events.append(event)
                dead_letters.append(row)
    # The outage's first event, exactly at its start: at the end of its first hour it is 50 min old
    # whatever the hour's volume (which follows the time of day the test runs at) spaces the others to.
    first = event_build(endpoint=endpoint, received_at=window.hours[16] + 10 * MINUTE, status=WebhookEvent.Status.PROCESSED,
                        event_type="invoice.paid")
    first.processed_at = window.hours[17] + 12 * MINUTE
    events.append(first)
    for n in range(3):  # just arrived, not yet processed
        events.append(event_build(endpoint=endpoint, received_at=now - (40 - 10 * n) * SECOND,
                                  status=WebhookEvent.Status.RECEIVED))
    WebhookEvent.objects.bulk_create(events, batch_size=1000)
    DeadLetter.objects.bulk_create(dead_letters)
    waiting = [e for e in events if e.event_type == "checkout.session.completed" and e.status == "processed"][-30:-28]
    return {"events": waiting, "now": now}


def _report(events, now) -> slo.SloReport:
    payments = [
        slo.UnprovisionedPayment(event_id=str(event.id), endpoint="stripe", event_type=event.event_type,
                                 status=event.status, received_at=event.received_at, paid_at=event.received_at,
                                 age_seconds=(now - event.received_at).total_seconds())
        for event in events
    ]
    return slo.SloReport(slo_seconds=300, count=len(payments), oldest_age_seconds=payments[-1].age_seconds,
                         payments=payments)


def test_an_operator_reads_the_last_24_hours_and_support_does_not(
    transactional_db, live_server, browser, screenshots, tmp_path, monkeypatch
):
    endpoint = endpoints.webhook_endpoint_create(slug="stripe", scheme="stripe", secret="whsec_browsertest0123456789")
    seeded = _day_seed(endpoint)
    report = _report(seeded["events"], seeded["now"])
    monkeypatch.setattr(slo, "unprovisioned_payments", lambda *, now=None, limit=50: report)
    staff_user_create("olivia-operator", "operators", password=PASSWORD)
    staff_user_create("sam-support", "support", password=PASSWORD)

    admin_log_in(browser, live_server, "olivia-operator")
    charts = {chart.get_attribute("id"): chart for chart in browser.find_elements(By.CSS_SELECTOR, "svg.ph-chart")}
    assert set(charts) == {"chart-outcomes", "chart-dlq-depth", "chart-backlog-age"}
    for chart in charts.values():
        assert chart.is_displayed() and chart.size["width"] > 500 and chart.size["height"] > 120
    assert len(charts["chart-outcomes"].find_elements(By.CSS_SELECTOR, "rect.ph-dead")) == 2  # the two incident hours
    assert "max 18 · now 4" in charts["chart-dlq-depth"].text  # 18 dead-lettered, 4 still open after the replay
    assert "max 50 min" in charts["chart-backlog-age"].text  # the outage's oldest event at the end of its first hour
    row = browser.find_element(By.ID, "provisioning-slo")
    assert "Paid but not provisioned" in row.text and str(report.payments[0].event_id) in row.text
    assert "ph-breach" in row.get_attribute("class")
    assert browser.find_element(By.ID, "dlq-depth").text == "4"

    # The whole page in one picture: headless Chromium will not open a window taller than its screen.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    assert browser.save_screenshot(str(screenshots / "admin-index.png"))

    browser.find_element(By.CSS_SELECTOR, "#ingestion-numbers summary").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#ingestion-numbers tbody tr")
    assert len(rows) == 24 and all(row.is_displayed() for row in rows)
    browser.execute_script("localStorage.setItem('theme', 'dark')")
    browser.refresh()
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == "dark"
    assert browser.save_screenshot(str(tmp_path / "admin-index-dark.png"))

    browser.find_element(By.ID, "provisioning-slo").find_element(By.LINK_TEXT, "Paid but not provisioned").click()
    assert "slo=breached" in browser.current_url
    listed = {box.get_attribute("value") for box in browser.find_elements(By.NAME, "_selected_action")}
    assert listed == {payment.event_id for payment in report.payments}

    admin_log_in(browser, live_server, "sam-support")
    assert not browser.find_elements(By.CSS_SELECTOR, "svg.ph-chart")
    assert not browser.find_elements(By.ID, "provisioning-slo")
    assert timezone.now() - seeded["now"] < timedelta(minutes=5)  # the seeded day still ends about now
