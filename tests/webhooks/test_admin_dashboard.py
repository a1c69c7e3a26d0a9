"""The operators' admin index: the last 24 hours as server-drawn charts, and the provisioning SLO row."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache

from tests.deadletters.factories import dead_letter_build, event_create, staff_user_create
from webhooks import charts, dashboard, slo
from webhooks.models import DeadLetter, WebhookEvent

NOW = datetime(2026, 12, 2, 15, 40, tzinfo=UTC)
START = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)  # the first of the 24 hours ending with NOW's
H, M = timedelta(hours=1), timedelta(minutes=1)
P, I, D = WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED, WebhookEvent.Status.DEAD


def _event(endpoint, status, received_at, processed_at=None):
    event = event_create(endpoint=endpoint, status=status, received_at=received_at)
    if processed_at is not None:
        WebhookEvent.objects.filter(pk=event.pk).update(processed_at=processed_at)
    return event


def _dead_letter(*, status=DeadLetter.Status.OPEN, first, last=None, acted=None, occurrences=1, event=None):
    row = dead_letter_build(event=event, status=status, failed_at=first)
    row.last_failed_at, row.acted_at, row.occurrences = last or first, acted, occurrences
    row.save(force_insert=True)
    return row


class TestHourWindow:
    def test_it_is_24_utc_hours_ending_with_the_current_one(self):
        window = dashboard.hour_window(now=NOW)
        assert window.start == START
        assert window.hours[0] == START and window.hours[-1] == datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
        assert window.samples[0] == START + H and window.samples[-2] == START + 23 * H and window.samples[-1] == NOW
        assert window.bucket(START - M) == 0 and window.bucket(START + 5 * H) == 5 and window.bucket(NOW + H) == 23


@pytest.mark.django_db
class TestOutcomesPerHour:
    def test_it_counts_events_received_each_hour_by_their_status_now(self, stripe_endpoint):
        for status, received_at in [
            (P, START + 10 * M), (P, START + 59 * M), (I, START + 30 * M),
            (D, START + 5 * H), (WebhookEvent.Status.FAILED, START + 5 * H + 1 * M),
            (WebhookEvent.Status.RECEIVED, START + 5 * H + 59 * M),
            (WebhookEvent.Status.PROCESSING, NOW - M),
            (P, START - M),  # the hour before the window
        ]:
            _event(stripe_endpoint, status, received_at)

        hours = dashboard.event_outcomes_hourly(window=dashboard.hour_window(now=NOW))

        assert len(hours) == 24
        assert hours[0] == {"processed": 2, "ignored": 1, "pending": 0, "dead": 0}
        assert hours[5] == {"processed": 0, "ignored": 0, "pending": 2, "dead": 1}
        assert hours[23] == {"processed": 0, "ignored": 0, "pending": 1, "dead": 0}
        assert sum(sum(hour.values()) for hour in hours) == 7

    def test_it_is_one_query(self, stripe_endpoint, django_assert_num_queries):
        _event(stripe_endpoint, P, START + H)
        with django_assert_num_queries(1):
            dashboard.event_outcomes_hourly(window=dashboard.hour_window(now=NOW))


@pytest.fixture
def dead_letters(db):
    """Dead letters with known open periods; the expected depth per hour is spelled out in the test."""
    resolved, discarded, replayed = DeadLetter.Status.RESOLVED, DeadLetter.Status.DISCARDED, DeadLetter.Status.REPLAYED
    _dead_letter(first=START - 3 * H)  # open all day
    _dead_letter(first=START + 2 * H + 30 * M)  # open from hour 2
    _dead_letter(status=resolved, first=START + H + 10 * M, acted=START + 4 * H + 20 * M)  # hours 1-3
    _dead_letter(status=discarded, first=START - 48 * H, acted=START + 6 * H + 5 * M)  # hours 0-5
    # Replayed at 8:15, failed again at 12:30 and open since: hours 0-7 and 12-23.
    _dead_letter(first=START - 10 * H, acted=START + 8 * H + 15 * M, last=START + 12 * H + 30 * M, occurrences=2)
    _dead_letter(status=replayed, first=START - 30 * H, acted=START - 2 * H)  # closed before the window
    # Reopened once, closed again: only its last stint (14:10-15:30) is known, so hour 14 only.
    _dead_letter(status=resolved, first=START - 20 * H, last=START + 14 * H + 10 * M, acted=START + 15 * H + 30 * M,
                 occurrences=2)


class TestDeadLettersOpenPerHour:
    EXPECTED = [3, 4, 5, 5, 4, 4, 3, 3, 2, 2, 2, 2, 3, 3, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3]

    def test_it_rebuilds_the_depth_at_the_end_of_each_hour(self, dead_letters):
        depth = dashboard.dead_letters_open_hourly(window=dashboard.hour_window(now=NOW))

        assert depth == self.EXPECTED
        assert depth[-1] == DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).count()

    def test_postgresql_and_the_sqlite_fallback_agree(self, dead_letters, django_assert_num_queries):
        window = dashboard.hour_window(now=NOW)
        with django_assert_num_queries(1):
            in_sql = dashboard._dead_letter_deltas_sql(window)
        assert in_sql == dashboard._dead_letter_deltas_python(window)
        assert in_sql[0] == 3 and sum(in_sql) == 3


@pytest.fixture
def backlog(stripe_endpoint):
    """Events with known waits; the expected age per hour is spelled out in the test."""
    _event(stripe_endpoint, P, START + 30 * M, START + 31 * M)  # done within its hour: never seen waiting
    _event(stripe_endpoint, P, START + 2 * H + 50 * M, START + 5 * H + 10 * M)  # waiting at 3:00, 4:00, 5:00
    _event(stripe_endpoint, I, START + 3 * H + 30 * M, START + 4 * H + 30 * M)  # waiting at 4:00, younger
    dead = _event(stripe_endpoint, D, START + 7 * H + 45 * M)  # died at 9:20
    _dead_letter(event=dead, first=START + 9 * H + 20 * M)
    _event(stripe_endpoint, WebhookEvent.Status.RECEIVED, START + 20 * H + 15 * M)  # still waiting now
    _event(stripe_endpoint, P, START - 3 * H, START + H + 30 * M)  # waited since before the window
    # Received longer than BACKLOG_LOOKBACK before the window: past hours do not look that far back.
    _event(stripe_endpoint, P, START - 30 * H, START + H + 10 * M)
    # Died at 11:20, replayed at 13:50, processed at 14:10: waiting at 11:00 and 14:00, not while dead.
    replayed = _event(stripe_endpoint, P, START + 10 * H + 5 * M, START + 14 * H + 10 * M)
    _dead_letter(event=replayed, status=DeadLetter.Status.REPLAYED, first=START + 11 * H + 20 * M,
                 acted=START + 13 * H + 50 * M)


class TestBacklogAgePerHour:
    def test_it_reads_the_oldest_waiting_event_at_the_end_of_each_hour(self, backlog):
        ages = dashboard.backlog_age_hourly(window=dashboard.hour_window(now=NOW))

        minutes = [None if age is None else age / 60 for age in ages]
        expected = [None] * 24
        expected[0] = 240  # received 3 h before the window, read at 1:00
        expected[2], expected[3], expected[4] = 10, 70, 130
        expected[7], expected[8] = 15, 75  # the event that died at 9:20
        expected[10], expected[13] = 55, 235  # the replayed one, its age from its first receipt
        expected[20], expected[21], expected[22] = 45, 105, 165
        expected[23] = 205  # now, 15:40: the gauge's figure
        assert minutes == expected

    def test_postgresql_and_the_sqlite_fallback_agree(self, backlog):
        window = dashboard.hour_window(now=NOW)
        oldest = dashboard._oldest_unfinished_received_at()
        assert dashboard._backlog_oldest_sql(window, oldest) == dashboard._backlog_oldest_python(window, oldest)

    def test_nothing_waiting_reads_none(self, db):
        assert dashboard.backlog_age_hourly(window=dashboard.hour_window(now=NOW)) == [None] * 24


class TestCharts:
    def test_a_stacked_bar_chart_is_svg_from_numbers_with_escaped_labels(self):
        hours = dashboard.hour_window(now=NOW).hours
        markup = charts.stacked_bar_chart(
            chart_id="c", title="A <b>title</b>", hours=hours,
            series=[charts.Series(key="processed", label="<i>x</i>", values=[3] * 24)],
        )
        assert markup.startswith('<svg id="c"') and markup.endswith("</svg>")
        assert "<b>" not in markup and "<i>" not in markup and "&lt;b&gt;" in markup
        assert markup.count('<rect class="ph-processed"') == 24
        assert "max 3" in markup and 'role="img"' in markup

    def test_durations_read_in_a_unit_that_fits(self):
        assert charts.duration_unit(90).suffix == "s"
        assert charts.duration_unit(3000).suffix == "min"
        assert charts.duration_unit(5 * 3600).suffix == "h"
        assert charts.number(5400, charts.duration_unit(5400)) == "90 min"
        assert charts.nice_ceiling(0) == 1 and charts.nice_ceiling(37) == 50 and charts.nice_ceiling(120) == 200


# --- The index page ----------------------------------------------------------------------------------------


def _report(event_ids: list[str]) -> slo.SloReport:
    payments = [
        slo.UnprovisionedPayment(
            event_id=event_id, endpoint="stripe", event_type="checkout.session.completed", status="processed",
            received_at=NOW - (20 + i) * M, paid_at=NOW - (21 + i) * M, age_seconds=(21 + i) * 60,
        )
        for i, event_id in enumerate(event_ids)
    ]
    return slo.SloReport(slo_seconds=300, count=len(payments) + 4, oldest_age_seconds=3 * 3600, payments=payments)


def _ours(page: str) -> str:
    """What this feature adds to the page: its style block and its section."""
    style = re.search(r"<style>.*?</style>", page, re.DOTALL)
    section = page[page.index('<div id="payhook-ops">'):page.index('<div id="content-main">')]
    return (style.group(0) if style else "") + section


@pytest.fixture
def slo_report(monkeypatch, stripe_endpoint):
    events = [_event(stripe_endpoint, P, NOW - (20 + i) * M, NOW - (20 + i) * M) for i in range(6)]
    report = _report([str(event.id) for event in events])
    calls = []

    def unprovisioned_payments(*, now=None, limit=50):
        calls.append(limit)
        return slo.SloReport(report.slo_seconds, report.count, report.oldest_age_seconds, report.payments[:limit])

    monkeypatch.setattr(slo, "unprovisioned_payments", unprovisioned_payments)
    return events, calls


@pytest.mark.django_db
class TestIndex:
    def test_operators_see_three_charts_their_numbers_and_the_slo_row(self, client, slo_report, backlog, dead_letters):
        events, _ = slo_report
        client.force_login(staff_user_create("olivia-operator", "operators"))
        with time_machine.travel(NOW, tick=False):
            page = client.get("/admin/").content.decode()

        ours = _ours(page)
        assert ours.count("<svg ") == 3
        for chart_id in ("chart-outcomes", "chart-dlq-depth", "chart-backlog-age"):
            assert f'<svg id="{chart_id}"' in ours and f'aria-labelledby="{chart_id}-title {chart_id}-desc"' in ours
        assert "Last 24 hours · UTC · 16:00 → now (15:40)" in ours
        assert "max 5 · now 4" in ours  # DLQ depth: 5 open at 3:00, 4:00 and 15:00; 4 now
        assert "max 4 h · now 3.4 h" in ours  # backlog: 240 min at 1:00 is the peak; 205 min now
        numbers = ours[ours.index('<details id="ingestion-numbers">'):]
        assert numbers.count("<tr><th scope=\"row\">") == 24
        # The SLO row: red, counted, linked to the filtered events, five ids of the report and no more.
        row = ours[ours.index('<tr id="provisioning-slo"'):]
        row = row[:row.index("</tr>")]
        assert 'class="ph-breach"' in row and "Paid but not provisioned" in row
        assert 'id="slo-unprovisioned">10<br>oldest 3' in row
        assert "/admin/webhooks/webhookevent/?slo=breached" in row
        assert sum(str(event.id) in row for event in events) == 5

    def test_no_script_and_no_remote_asset_in_what_the_index_adds(self, client, slo_report, backlog):
        client.force_login(staff_user_create("olivia-operator", "operators"))
        ours = _ours(client.get("/admin/").content.decode())
        assert "<svg " in ours
        assert "<script" not in ours.lower() and "javascript:" not in ours.lower()
        assert not re.search(r"https?://|url\(|@import|@font-face", ours, re.IGNORECASE)

    def test_a_met_slo_shows_zero_and_no_alarm(self, client, db):
        client.force_login(staff_user_create("olivia-operator", "operators"))
        page = client.get("/admin/").content.decode()
        row = page[page.index('<tr id="provisioning-slo"'):]
        assert row.startswith('<tr id="provisioning-slo">') and 'id="slo-unprovisioned">0</td>' in row

    def test_support_sees_neither_the_charts_nor_the_slo_row(self, client, slo_report, dead_letters):
        events, calls = slo_report
        client.force_login(staff_user_create("sam-support", "support"))
        page = client.get("/admin/").content.decode()
        assert client.get("/admin/").status_code == 200
        for absent in ('class="ph-chart"', "payhook-ops", "Paid but not provisioned", "chart-dlq-depth", str(events[0].id)):
            assert absent not in page
        assert calls == []  # nor is the report computed for them

    def test_the_slo_filter_lists_the_breaching_events(self, client, slo_report, stripe_endpoint):
        events, calls = slo_report
        other = _event(stripe_endpoint, P, NOW - H, NOW - H)
        client.force_login(staff_user_create("olivia-operator", "operators"))
        page = client.get("/admin/webhooks/webhookevent/?slo=breached").content.decode()
        listed = set(re.findall(r'name="_selected_action" value="([0-9a-f-]+)"', page))
        assert listed == {str(event.id) for event in events}
        assert str(other.id) not in listed
        assert calls == [500]


@pytest.mark.django_db
class TestDashboardCache:
    def test_the_index_reuses_a_recent_dashboard_and_recomputes_it_once_it_expires(self, settings, stripe_endpoint):
        settings.ADMIN_DASHBOARD_CACHE_SECONDS = 60
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "dashboard-test"}}
        cache.clear()
        with time_machine.travel(NOW, tick=False):
            _event(stripe_endpoint, P, NOW - 10 * M)
            first = dashboard.ingestion_dashboard_cached()
            _event(stripe_endpoint, P, NOW - 5 * M)
            again = dashboard.ingestion_dashboard_cached()
        assert sum(first.outcomes[-1].values()) == 1
        assert again == first  # an operator's reload within the minute costs no scan

        with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
            fresh = dashboard.ingestion_dashboard_cached()
        assert sum(fresh.outcomes[-1].values()) == 2

    def test_zero_draws_it_fresh_every_time(self, settings, stripe_endpoint):
        settings.ADMIN_DASHBOARD_CACHE_SECONDS = 0
        with time_machine.travel(NOW, tick=False):
            _event(stripe_endpoint, P, NOW - 10 * M)
            assert sum(dashboard.ingestion_dashboard_cached().outcomes[-1].values()) == 1
            _event(stripe_endpoint, P, NOW - 5 * M)
            assert sum(dashboard.ingestion_dashboard_cached().outcomes[-1].values()) == 2
