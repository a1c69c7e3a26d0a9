"""The operators' admin index: the last 24 hours of ingestion at a glance (selectors only).

Every series has one value per UTC hour, the oldest first, the last hour being the current one
(still running). Outcomes count the events *received* in each hour by their status now. DLQ depth and
backlog age are sampled at the end of each hour (the last one: now), rebuilt from timestamps, since
nothing stores their history:

- A dead letter is open from its failure until `acted_at` (replayed, resolved or discarded). A row
  reopened by a new failure keeps only its latest close: open again from `last_failed_at`. Of a row
  that was reopened and then closed again, only its last stint (`last_failed_at` → `acted_at`) is known.
- An event waits from `received_at` until `processed_at`, or until its dead letter's `last_failed_at`
  if it died. One replayed from its dead letter does not wait while it lay dead: it waits again from
  the replay (`acted_at`) until processed, its age still counted from its first receipt, as the
  `payhook_oldest_unprocessed_event_age_seconds` gauge counts it. An event reprocessed from the
  events admin leaves no such trace and counts as waiting from its first receipt. Past hours look
  back `BACKLOG_LOOKBACK` before the window: an event that had already waited longer than that when
  the window opened and finished inside it is missing from them (the current hour sees every
  unfinished event).

Refused deliveries (bad signatures, rate limits, oversized bodies) are never stored, so no hour here
counts them: `payhook_webhook_refused_total` does.

PostgreSQL folds the hours in SQL (`generate_series`), reading index ranges of the events table and
the (small) dead-letter table; SQLite (`make run`) does the same sums in Python over the same rows.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from webhooks.deadletters import EVENT_UNFINISHED
from webhooks.models import DeadLetter, WebhookEvent

HOURS = 24
HOUR = timedelta(hours=1)
BACKLOG_LOOKBACK = timedelta(hours=24)

# Outcomes in the order they stack, bottom first, and the statuses each one gathers.
OUTCOMES = ("processed", "ignored", "pending", "dead")
OUTCOME_OF_STATUS = {
    WebhookEvent.Status.PROCESSED: "processed",
    WebhookEvent.Status.IGNORED: "ignored",
    WebhookEvent.Status.RECEIVED: "pending",
    WebhookEvent.Status.PROCESSING: "pending",
    WebhookEvent.Status.FAILED: "pending",
    WebhookEvent.Status.DEAD: "dead",
}
_FINISHED = (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED)
_CLOSED = (DeadLetter.Status.REPLAYED, DeadLetter.Status.RESOLVED, DeadLetter.Status.DISCARDED)


@dataclass(frozen=True)
class HourWindow:
    """24 UTC hours ending with the current one; `now` is when it was taken."""

    start: datetime
    now: datetime

    @property
    def hours(self) -> list[datetime]:
        return [self.start + i * HOUR for i in range(HOURS)]

    @property
    def samples(self) -> list[datetime]:
        """When each hour's depth and age are read: its end, and now for the current hour."""
        return [self.start + (i + 1) * HOUR for i in range(HOURS - 1)] + [self.now]

    def bucket(self, moment: datetime) -> int:
        """The hour `moment` falls in, 0 for anything before the window, the last for anything after."""
        return min(max(int((moment - self.start) // HOUR), 0), HOURS - 1)


@dataclass(frozen=True)
class IngestionDashboard:
    window: HourWindow
    outcomes: list[dict[str, int]]  # per hour: {outcome: events received that hour}
    dead_letters_open: list[int]  # per hour: open dead letters at its end
    backlog_age_seconds: list[float | None]  # per hour: the oldest unfinished event's age at its end; None: none


def hour_window(*, now: datetime | None = None) -> HourWindow:
    now = (now or timezone.now()).astimezone(UTC)
    return HourWindow(start=now.replace(minute=0, second=0, microsecond=0) - (HOURS - 1) * HOUR, now=now)


def ingestion_dashboard(*, now: datetime | None = None) -> IngestionDashboard:
    window = hour_window(now=now)
    with _without_jit():
        return IngestionDashboard(
            window=window,
            outcomes=event_outcomes_hourly(window=window),
            dead_letters_open=dead_letters_open_hourly(window=window),
            backlog_age_seconds=backlog_age_hourly(window=window),
        )


_CACHE_KEY = "admin-dashboard:ingestion:v1"


def ingestion_dashboard_cached() -> IngestionDashboard:
    """The dashboard as of at most `ADMIN_DASHBOARD_CACHE_SECONDS` ago, shared by every web process.

    Its scans read a day or two of events (about 3.4 s at a million events a day, measured): an
    operator reloading the index, or several on call at once, must not repeat them. A cache that
    cannot answer (Redis away) costs only the recomputation.
    """
    seconds = settings.ADMIN_DASHBOARD_CACHE_SECONDS
    if seconds <= 0:
        return ingestion_dashboard()
    try:
        board = cache.get(_CACHE_KEY)
    except Exception:  # the cache is an optimisation: the page is drawn without it
        board = None
    if board is None:
        board = ingestion_dashboard()
        try:
            cache.set(_CACHE_KEY, board, seconds)
        except Exception:
            pass
    return board


@contextmanager
def _without_jit():
    """PostgreSQL's JIT compiles these one-off scans for longer than some of them run (1.7 s of the
    backlog query's 5.4 s on 2 million events, measured); SET LOCAL ends with the transaction."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield


# --- Events by outcome --------------------------------------------------------------------------------


def event_outcomes_hourly(*, window: HourWindow) -> list[dict[str, int]]:
    """Events received in each hour, by their status now: one GROUP BY over the (status, received_at) index."""
    rows = (
        # Every status spelled out: PostgreSQL then walks the (status, received_at) index once per
        # status instead of reading the whole table for a range on its second column.
        WebhookEvent.objects.filter(
            status__in=list(OUTCOME_OF_STATUS), received_at__gte=window.start, received_at__lt=window.start + HOURS * HOUR
        )
        .annotate(hour=TruncHour("received_at", tzinfo=UTC))
        .values("hour", "status")
        .annotate(count=Count("*"))
        .order_by()
    )
    per_hour = [dict.fromkeys(OUTCOMES, 0) for _ in range(HOURS)]
    for row in rows:
        per_hour[window.bucket(row["hour"])][OUTCOME_OF_STATUS[row["status"]]] += row["count"]
    return per_hour


# --- Dead letters open ---------------------------------------------------------------------------------


def _dead_letter_changes(rows) -> list[tuple[datetime, int]]:
    """(moment, +1 opened / -1 closed) from (status, occurrences, first, last failure, acted_at) rows."""
    changes = []
    for status, occurrences, first_failed_at, last_failed_at, acted_at in rows:
        reopened = occurrences > 1 and acted_at is not None
        if status == DeadLetter.Status.OPEN:
            changes.append((first_failed_at, 1))
            if reopened:  # closed at acted_at, open again since its latest failure
                changes += [(acted_at, -1), (last_failed_at, 1)]
        else:
            changes += [(last_failed_at if occurrences > 1 else first_failed_at, 1), (acted_at, -1)]
    return changes


_DEAD_LETTER_CHANGES_SQL = """
WITH candidates AS (
    SELECT status, occurrences, first_failed_at, last_failed_at, acted_at FROM {dead_letter}
    WHERE status = %(open)s OR (status = ANY(%(closed)s) AND acted_at >= %(start)s)
), changes AS (
    SELECT CASE WHEN status <> %(open)s AND occurrences > 1 THEN last_failed_at ELSE first_failed_at END AS at,
           1 AS delta
    FROM candidates
    UNION ALL SELECT acted_at, -1 FROM candidates
    WHERE status <> %(open)s OR (occurrences > 1 AND acted_at IS NOT NULL)
    UNION ALL SELECT last_failed_at, 1 FROM candidates
    WHERE status = %(open)s AND occurrences > 1 AND acted_at IS NOT NULL
)
SELECT LEAST(GREATEST(floor(date_part('epoch', at - %(start)s) / 3600), 0), %(last)s)::int AS hour, sum(delta)
FROM changes GROUP BY 1
"""


def dead_letters_open_hourly(*, window: HourWindow) -> list[int]:
    """Open dead letters at the end of each hour (the last value is the DLQ depth now).

    Reads the open rows and the rows closed since the window opened. `acted_at` has no index, so the
    second part reads the dead-letter table itself: it holds one row per failed unit of work, orders
    of magnitude fewer than events.
    """
    per_hour = _dead_letter_deltas_sql(window) if connection.vendor == "postgresql" else _dead_letter_deltas_python(window)
    running, depth = 0, []
    for delta in per_hour:
        running += delta
        depth.append(running)
    return depth


def _dead_letter_deltas_sql(window: HourWindow) -> list[int]:
    """Per hour: dead letters opened minus closed in it (before the window: in the first hour)."""
    per_hour = [0] * HOURS
    with connection.cursor() as cursor:
        cursor.execute(
            _DEAD_LETTER_CHANGES_SQL.format(dead_letter=connection.ops.quote_name(DeadLetter._meta.db_table)),
            {"open": DeadLetter.Status.OPEN, "closed": list(_CLOSED), "start": window.start, "last": HOURS - 1},
        )
        for hour, delta in cursor.fetchall():
            per_hour[hour] += int(delta)
    return per_hour


def _dead_letter_deltas_python(window: HourWindow) -> list[int]:
    per_hour = [0] * HOURS
    rows = DeadLetter.objects.filter(
        Q(status=DeadLetter.Status.OPEN) | Q(status__in=_CLOSED, acted_at__gte=window.start)
    ).values_list("status", "occurrences", "first_failed_at", "last_failed_at", "acted_at")
    for moment, delta in _dead_letter_changes(rows):
        per_hour[window.bucket(moment)] += delta
    return per_hour


# --- Backlog age -----------------------------------------------------------------------------------------


_BACKLOG_SQL = """
WITH finished AS (
    SELECT e.received_at, e.processed_at, d.first_failed_at, d.acted_at
    FROM {event} e
    LEFT JOIN {dead_letter} d ON d.event_id = e.id AND d.status = %(replayed)s AND d.acted_at IS NOT NULL
    WHERE e.status = ANY(%(finished)s) AND e.received_at >= %(lookback)s AND e.received_at < %(last_sample)s
      AND e.processed_at >= %(first_sample)s
      -- Most events finish within the hour they arrived in and never wait at an hour's end: drop them
      -- here, with timestamp arithmetic only (the connection's time zone is UTC, as Django sets it).
      AND (e.processed_at >= date_trunc('hour', e.received_at) + interval '1 hour' OR d.acted_at IS NOT NULL)
), spans AS (
    SELECT received_at, received_at AS since, coalesce(first_failed_at, processed_at) AS until FROM finished
    UNION ALL
    SELECT received_at, acted_at, processed_at FROM finished WHERE acted_at IS NOT NULL
    UNION ALL
    SELECT e.received_at, e.received_at, d.last_failed_at FROM {dead_letter} d JOIN {event} e ON e.id = d.event_id
    WHERE e.status = %(dead)s AND d.last_failed_at >= %(first_sample)s AND e.received_at < %(last_sample)s
    UNION ALL
    SELECT %(oldest_unfinished)s::timestamptz, %(oldest_unfinished)s::timestamptz, NULL
), waits AS (
    -- Only spans that cross the end of an hour: a handful unless a backlog built up.
    SELECT received_at, GREATEST(since_hour, 0)::int AS first_hour, LEAST(until_hour - 1, %(last_past)s)::int AS last_hour
    FROM (
        SELECT received_at,
               floor(date_part('epoch', since - %(start)s) / 3600) AS since_hour,
               coalesce(floor(date_part('epoch', until - %(start)s) / 3600), %(hours)s) AS until_hour
        FROM spans WHERE received_at IS NOT NULL
    ) AS span_hours
    WHERE since_hour < until_hour
)
SELECT hour, min(received_at)
FROM waits JOIN generate_series(0, %(last_past)s) AS hour ON hour BETWEEN first_hour AND last_hour
GROUP BY hour
"""


def _oldest_unfinished_received_at() -> datetime | None:
    return WebhookEvent.objects.filter(status__in=EVENT_UNFINISHED).aggregate(oldest=Min("received_at"))["oldest"]


def backlog_age_hourly(*, window: HourWindow) -> list[float | None]:
    """The oldest unfinished event's age at the end of each hour, in seconds; None when none waited.

    An event counts at a moment if it was received before it and finished (processed, ignored or
    dead-lettered) after it. Past hours read the events received from `BACKLOG_LOOKBACK` before the
    window and finished inside it (a (status, received_at) index range), dead letters failed inside it
    (`last_failed_at` index) and the oldest unfinished event; the current hour reads that one alone.
    """
    oldest_unfinished = _oldest_unfinished_received_at()
    oldest = _backlog_oldest_sql if connection.vendor == "postgresql" else _backlog_oldest_python
    oldest_at = oldest(window, oldest_unfinished) + [oldest_unfinished]
    return [
        None if received_at is None else max((sample - received_at).total_seconds(), 0.0)
        for sample, received_at in zip(window.samples, oldest_at, strict=True)
    ]


def _backlog_oldest_sql(window: HourWindow, oldest_unfinished: datetime | None) -> list[datetime | None]:
    """Per past hour (all but the current one): the received_at of the oldest event waiting at its end."""
    samples, quote = window.samples, connection.ops.quote_name
    oldest_at = [None] * (HOURS - 1)
    with connection.cursor() as cursor:
        cursor.execute(
            _BACKLOG_SQL.format(event=quote(WebhookEvent._meta.db_table), dead_letter=quote(DeadLetter._meta.db_table)),
            {
                "finished": list(_FINISHED), "dead": WebhookEvent.Status.DEAD, "replayed": DeadLetter.Status.REPLAYED,
                "start": window.start,
                "lookback": window.start - BACKLOG_LOOKBACK, "first_sample": samples[0], "last_sample": samples[-2],
                "oldest_unfinished": oldest_unfinished, "hours": HOURS, "last_past": HOURS - 2,
            },
        )
        for hour, received_at in cursor.fetchall():
            oldest_at[hour] = received_at
    return oldest_at


def _backlog_oldest_python(window: HourWindow, oldest_unfinished: datetime | None) -> list[datetime | None]:
    samples = window.samples[:-1]
    received = {"received_at__gte": window.start - BACKLOG_LOOKBACK, "received_at__lt": samples[-1]}
    finished = WebhookEvent.objects.filter(status__in=_FINISHED, processed_at__gte=samples[0], **received)
    replays = {
        event_id: (first_failed_at, acted_at)
        for event_id, first_failed_at, acted_at in DeadLetter.objects.filter(
            status=DeadLetter.Status.REPLAYED, acted_at__isnull=False, event__in=finished
        ).values_list("event_id", "first_failed_at", "acted_at")
    }
    spans = []  # (received_at, waiting since, until); None: still waiting
    for event_id, received_at, processed_at in finished.values_list("id", "received_at", "processed_at"):
        if event_id in replays:  # waiting until it died, and again from its replay
            failed_at, replayed_at = replays[event_id]
            spans += [(received_at, received_at, failed_at), (received_at, replayed_at, processed_at)]
        else:
            spans.append((received_at, received_at, processed_at))
    spans += DeadLetter.objects.filter(
        event__status=WebhookEvent.Status.DEAD, last_failed_at__gte=samples[0], event__received_at__lt=samples[-1]
    ).values_list("event__received_at", "event__received_at", "last_failed_at")
    if oldest_unfinished:
        spans.append((oldest_unfinished, oldest_unfinished, None))
    oldest_at = [None] * len(samples)
    for received_at, since, until in spans:
        for hour, sample in enumerate(samples):
            waiting = since < sample and (until is None or until >= sample)
            if waiting and (oldest_at[hour] is None or received_at < oldest_at[hour]):
                oldest_at[hour] = received_at
    return oldest_at
