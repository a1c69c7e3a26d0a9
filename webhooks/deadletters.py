"""Dead letters: work that failed for good, and the operator actions that put it right.

Processing calls `dead_letter_record()` when a unit of work will not be retried. Operators then
replay, resolve or discard it (admin, API) or reprocess stored events (admin, `replay_events`).
Replay never performs an effect itself: it puts the event back to `received` and hands it to the
same Celery task as a first delivery, whose effects are idempotent on their own keys, so a replay
of work that already succeeded produces nothing new.

Each action is written once, set-based over a queryset; acting on one row is that same action over
a one-row queryset (see "Operator actions").
"""

import hashlib
import json
import logging
import re
import traceback
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from audit.redaction import redact_text
from audit.services import audit_entries_append, audit_entry_append
from config import metrics
from config.exceptions import ApplicationError
from webhooks.models import DeadLetter, WebhookEvent
from webhooks.outbox import webhook_events_publish
from webhooks.retention import event_payload_removed_error

logger = logging.getLogger(__name__)

MESSAGE_MAX_CHARS = 2000
TRACEBACK_MAX_CHARS = 20000

# Events a worker may hold right now; reprocessing them would race the worker, and they will end
# `processed`, `ignored` or `dead` on their own (the sweep re-dispatches lost `received` ones).
EVENT_IN_FLIGHT = (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING)
EVENT_REPROCESSABLE = (
    WebhookEvent.Status.PROCESSED,
    WebhookEvent.Status.IGNORED,
    WebhookEvent.Status.FAILED,
    WebhookEvent.Status.DEAD,
)
EVENT_UNFINISHED = (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING, WebhookEvent.Status.FAILED)


# --- Errors -------------------------------------------------------------------------------------------


class DeadLetterError(ApplicationError):
    code = "dead_letter_error"
    status_code = 409


class NoteRequired(DeadLetterError):
    code = "note_required"
    status_code = 400


class DeadLetterNotOpen(DeadLetterError):
    code = "dead_letter_not_open"


class DeadLetterClosed(DeadLetterError):
    code = "dead_letter_closed"


class DeadLetterNotReplayable(DeadLetterError):
    code = "dead_letter_not_replayable"


class EventInFlight(DeadLetterError):
    code = "event_in_flight"


@dataclass(frozen=True)
class BulkOutcome:
    acted: int
    skipped: int
    payload_removed: int = 0  # of the skipped: events whose raw payload retention removed (webhooks/retention.py)


# --- What a dead letter keeps of its error ---------------------------------------------------------------
# A dead letter is read by operators long after the failure, so it keeps only what cannot carry
# personal data: the exception's type, the message of payhook's own errors (ApplicationError
# messages are PII-free by contract, and still pass the detectors as a second net), and where it
# failed as `file:line:function` frames. Never a third-party message (a library quotes its input),
# a source line (which may hold literals of the data) or a local variable.

WITHHELD_MESSAGE = "[message withheld: not a payhook error]"
_FRAME_LINE = re.compile(r'^\s*File "([^"\n]+)", line (\d+), in ([\w<>.]+)\s*$', re.MULTILINE)
_CHAIN_DEPTH = 5


def _error_message(exc: BaseException) -> str:
    if not isinstance(exc, ApplicationError):
        return WITHHELD_MESSAGE
    return redact_text(str(exc.message))[:MESSAGE_MAX_CHARS]


def _frame_file(filename: str) -> str:
    # Relative to the project or to site-packages: an absolute path can name a person's home.
    filename = filename.replace("\\", "/")
    if not filename.startswith("/") and ":" not in filename:
        return filename  # already relative
    base = str(settings.BASE_DIR).replace("\\", "/").rstrip("/") + "/"
    if filename.startswith(base):
        return filename[len(base):]
    if "-packages/" in filename:
        return filename.rsplit("-packages/", 1)[1]
    return filename.rsplit("/", 1)[-1]


def _frame(filename: str, lineno, name: str) -> str:
    return f"{_frame_file(filename)}:{lineno}:{name}"


def _traceback_frames(exc: BaseException, traceback_text: str = "") -> str:
    """`Type` then one `file:line:function` line per frame, for the exception and its causes.

    Built from the exception's own traceback; an exception that was never raised here (a worker
    passes one it caught elsewhere) falls back to the frame lines of `traceback_text`."""
    blocks, seen, current = [], set(), exc
    while current is not None and id(current) not in seen and len(blocks) < _CHAIN_DEPTH:
        seen.add(id(current))
        if current.__traceback__ is not None:
            frames = [_frame(f.filename, f.lineno, f.name) for f in traceback.extract_tb(current.__traceback__)]
        elif current is exc:
            frames = [_frame(*match.groups()) for match in _FRAME_LINE.finditer(traceback_text or "")]
        else:
            frames = []
        blocks.append("\n".join([type(current).__name__, *(f"  {frame}" for frame in frames)]))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    # Outermost last, like Python's own report.
    return "\n-- while handling the above:\n".join(reversed(blocks))[-TRACEBACK_MAX_CHARS:]


def _args_safe(args) -> list:
    # Args are ids by contract; a round trip through JSON guarantees the column can hold them.
    return json.loads(json.dumps(list(args or []), default=str))


# --- Side channels: audit and Celery --------------------------------------------------------------------


def _events_enqueue(event_ids: list[str]) -> None:
    """Publish the events for processing; runs after commit.

    A broker outage must not fail the operator's action after it committed: the events are
    `received` with `dispatched_at` set and unleased, so the sweep republishes them once the queue
    is empty (or, behind a backlog, after WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS).
    """
    try:
        webhook_events_publish(event_ids=event_ids)
    except Exception as exc:  # broker down: the sweep is the fallback, see above
        logger.warning("replay publish failed for %d events (%s); the sweep will republish them", len(event_ids), type(exc).__name__)


def _events_reset(event_ids: list, now) -> int:
    """Put events back to a first delivery's state: the processing task treats them as new."""
    return WebhookEvent.objects.filter(id__in=event_ids).update(
        status=WebhookEvent.Status.RECEIVED, attempts=0, last_error="", dispatched_at=now
    )


def _actor(user) -> str:
    return str(user.id) if user is not None else "system"


def _note_clean(note: str | None) -> str:
    """The operator's note as kept on the dead letter: free text, so scrubbed of every detectable
    shape (emails, cards, IBANs, phones, secrets) before it is stored, like its audit copy."""
    note = redact_text((note or "").strip())
    if not note:
        raise NoteRequired("a note saying why is required")
    return note


def _audit_data(*, dead_letter_id: int, task_name: str, note: str) -> dict:
    """An operator action's audit data; the note is operator free text, so it is scrubbed of
    personal data and secrets before it leaves the row (the audit redactor scrubs it again)."""
    data = {"dead_letter": dead_letter_id, "task": task_name}
    if note:
        data["note"] = redact_text(note)
    return data


# --- Recording ------------------------------------------------------------------------------------------


def dead_letter_unit_key(*, task_name: str, event_id: str | None, args) -> str:
    if event_id:
        return f"{task_name}:{event_id}"
    digest = hashlib.sha256(json.dumps(_args_safe(args), sort_keys=True).encode()).hexdigest()[:32]
    return f"{task_name}:args:{digest}"


def dead_letter_record(
    *, task_name: str, event_id: str | None, args: list, exc: BaseException, attempts: int, traceback_text: str = "",
    subjects: dict | None = None,
) -> DeadLetter:
    """Record that a unit of work failed for good; one row per unit, reopened if it fails again.

    Call it outside the failed transaction. Recording the same open failure twice (a failure hook
    that ran twice) changes nothing but the timestamps and error text: `attempts` only grows when a
    closed or replayed row is reopened, and the audit entry is deduplicated on (row, attempts).
    Of the error it keeps the type, the message only of payhook's own errors, and the frames as
    `file:line:function` (from `exc`, or from `traceback_text`'s frame lines when `exc` carries no
    traceback); see "What a dead letter keeps" above. `subjects` (the event's buyer identifiers)
    go to the `task.dead_lettered` entry, as blind-index hashes only.
    """
    now = timezone.now()
    error_type = type(exc).__name__[:200]
    message = _error_message(exc)
    traceback_clean = _traceback_frames(exc, traceback_text)
    safe_args = _args_safe(args)
    attempts = max(int(attempts), 0)

    with transaction.atomic():
        updated_events = 0
        if event_id:
            updated_events = WebhookEvent.objects.filter(id=event_id).update(
                status=WebhookEvent.Status.DEAD, last_error=error_type[:500]
            )
        event_fk = event_id if updated_events else None
        row, created = DeadLetter.objects.select_for_update().get_or_create(
            unit_key=dead_letter_unit_key(task_name=task_name, event_id=event_id, args=args),
            defaults={
                "task_name": task_name,
                "args": safe_args,
                "event_id": event_fk,
                "error_type": error_type,
                "error_message": message,
                "traceback": traceback_clean,
                "attempts": attempts,
                "first_failed_at": now,
                "last_failed_at": now,
            },
        )
        if not created:
            if row.status == DeadLetter.Status.OPEN:
                row.attempts = max(row.attempts, attempts)
            else:
                row.attempts += attempts
                row.occurrences += 1
                row.status = DeadLetter.Status.OPEN
            row.args = safe_args
            row.event_id = event_fk or row.event_id
            row.error_type = error_type
            row.error_message = message
            row.traceback = traceback_clean
            row.last_failed_at = now
            row.save(
                update_fields=[
                    "attempts", "occurrences", "status", "args", "event", "error_type", "error_message", "traceback",
                    "last_failed_at",
                ]
            )
        audit_entry_append(
            action="task.dead_lettered",
            event_id=str(row.event_id) if row.event_id else None,
            data={"task": task_name, "error_type": error_type, "attempts": row.attempts},
            subjects=subjects,
            dedup_key=f"dlq:{row.id}:{row.attempts}",
        )
    logger.warning(
        "dead-lettered task=%s event=%s error=%s attempts=%d dead_letter=%s",
        task_name, row.event_id, error_type, row.attempts, row.id,
    )
    return row


# --- Operator actions -----------------------------------------------------------------------------------
# Each action is written once, over a queryset, and is set-based (a fixed number of statements
# whatever the row count) so that an operator can act on 10,000 rows from the admin without timing
# out the request. The action on one row (API) is the same function over a one-row queryset, which
# then says why the row was refused instead of counting it as skipped.

# Replayed rows may still be closed by hand (the replay worked, or the operator gives up on it).
CLOSABLE = Q(status__in=(DeadLetter.Status.OPEN, DeadLetter.Status.REPLAYED))
# An event whose raw payload retention removed has nothing left to replay. EXISTS, not a join: a join
# would make the FOR UPDATE of the dead letters lock their events too.
REPLAYABLE = Q(status=DeadLetter.Status.OPEN, event__isnull=False) & Q(
    Exists(WebhookEvent.objects.filter(pk=OuterRef("event_id"), payload_removed_at__isnull=True))
)


def _rows_lock(queryset: QuerySet, eligible: Q, *fields: str, skip_locked: bool = False) -> tuple[int, list[tuple]]:
    """How many rows `queryset` selects, and the `fields` of its `eligible` rows, locked in pk order."""
    # A fresh queryset over the caller's pks: the caller's may carry joins, ordering or
    # select_related that FOR UPDATE cannot lock.
    selected = queryset.model.objects.filter(pk__in=queryset.order_by().values("pk"))
    total = selected.count()
    rows = list(selected.filter(eligible).select_for_update(skip_locked=skip_locked).order_by("pk").values_list(*fields))
    return total, rows


# What an action needs of each dead letter, in `_rows_act` and `_rows_audit` order.
_ROW_FIELDS = ("id", "event_id", "task_name", "occurrences")


def _rows_act(rows: list[tuple], *, status: str, user, note: str, now) -> None:
    DeadLetter.objects.filter(id__in=[row[0] for row in rows]).update(status=status, acted_by=user, acted_at=now, note=note)


def _rows_audit(rows: list[tuple], *, action: str, user, note: str) -> None:
    # Deduplicated on (row, occurrences): a row reopened by a new failure can be acted on again.
    audit_entries_append(
        entries=[
            {
                "action": action,
                "actor": _actor(user),
                "event_id": str(event_id) if event_id else None,
                "data": _audit_data(dead_letter_id=row_id, task_name=task_name, note=note),
                "dedup_key": f"{action}:{row_id}:{occurrences}",
            }
            for row_id, event_id, task_name, occurrences in rows
        ]
    )


def _one(bulk, *, dead_letter: DeadLetter, refusal, **kwargs) -> DeadLetter:
    """`bulk` over the one row: the row as it now is, or `refusal(row)` raised if it was skipped."""
    outcome = bulk(queryset=DeadLetter.objects.filter(pk=dead_letter.pk), **kwargs)
    row = DeadLetter.objects.get(pk=dead_letter.pk)
    if not outcome.acted:
        raise refusal(row)
    return row


def dead_letter_replay_bulk(*, queryset: QuerySet, user, note: str = "") -> BulkOutcome:
    """Replay every open dead letter with a stored event in `queryset`; others are skipped."""
    note = redact_text((note or "").strip())
    now = timezone.now()
    with transaction.atomic():
        total, rows = _rows_lock(queryset, REPLAYABLE, *_ROW_FIELDS)
        if rows:
            _rows_act(rows, status=DeadLetter.Status.REPLAYED, user=user, note=note, now=now)
            event_ids = list(dict.fromkeys(str(row[1]) for row in rows))
            _events_reset(event_ids, now)
            _rows_audit(rows, action="dlq.replayed", user=user, note=note)
            transaction.on_commit(lambda: _events_enqueue(event_ids))
            transaction.on_commit(lambda: metrics.replays.labels(kind="dead_letter").inc(len(event_ids)))
    removed = _payload_removed_count(queryset, "event__") if total > len(rows) else 0
    return BulkOutcome(acted=len(rows), skipped=total - len(rows), payload_removed=removed)


def _payload_removed_count(queryset: QuerySet, prefix: str = "") -> int:
    return queryset.model.objects.filter(
        pk__in=queryset.order_by().values("pk"), **{f"{prefix}payload_removed_at__isnull": False}
    ).count()


def _replay_refusal(row: DeadLetter) -> ApplicationError:
    if row.status != DeadLetter.Status.OPEN:
        return DeadLetterNotOpen(f"dead letter {row.id} is {row.status}; only open dead letters can be replayed")
    if row.event is not None and row.event.payload_removed_at is not None:
        return event_payload_removed_error(row.event)
    return DeadLetterNotReplayable(f"dead letter {row.id} has no stored event to replay")


def dead_letter_replay(*, dead_letter: DeadLetter, user, note: str = "") -> DeadLetter:
    """Re-run the dead letter's event through processing; only open rows with a stored event."""
    return _one(dead_letter_replay_bulk, dead_letter=dead_letter, refusal=_replay_refusal, user=user, note=note)


def _close_bulk(*, queryset: QuerySet, user, note: str, status: str, action: str) -> BulkOutcome:
    note = _note_clean(note)
    now = timezone.now()
    with transaction.atomic():
        total, rows = _rows_lock(queryset, CLOSABLE, *_ROW_FIELDS)
        if rows:
            _rows_act(rows, status=status, user=user, note=note, now=now)
            _rows_audit(rows, action=action, user=user, note=note)
    return BulkOutcome(acted=len(rows), skipped=total - len(rows))


def _close_refusal(row: DeadLetter) -> DeadLetterError:
    return DeadLetterClosed(f"dead letter {row.id} is already {row.status}")


def dead_letter_resolve_bulk(*, queryset: QuerySet, user, note: str) -> BulkOutcome:
    """Close dead letters whose cause was put right by other means (the note says how)."""
    return _close_bulk(queryset=queryset, user=user, note=note, status=DeadLetter.Status.RESOLVED, action="dlq.resolved")


def dead_letter_resolve(*, dead_letter: DeadLetter, user, note: str) -> DeadLetter:
    return _one(dead_letter_resolve_bulk, dead_letter=dead_letter, refusal=_close_refusal, user=user, note=note)


def dead_letter_discard_bulk(*, queryset: QuerySet, user, note: str) -> BulkOutcome:
    """Close dead letters that should never be processed (the note says why)."""
    return _close_bulk(queryset=queryset, user=user, note=note, status=DeadLetter.Status.DISCARDED, action="dlq.discarded")


def dead_letter_discard(*, dead_letter: DeadLetter, user, note: str) -> DeadLetter:
    return _one(dead_letter_discard_bulk, dead_letter=dead_letter, refusal=_close_refusal, user=user, note=note)


# --- Reprocessing stored events -------------------------------------------------------------------------


def webhook_events_reprocess_bulk(*, queryset: QuerySet, user, via: str = "admin") -> BulkOutcome:
    """Re-run finished events (`processed`, `ignored`, `failed`, `dead`) through processing.

    Events a worker holds or will pick up anyway are skipped, as are rows locked right now. Open
    dead letters of the reprocessed events are marked `replayed`: the operator acted on them.
    """
    now = timezone.now()
    with transaction.atomic():
        total, rows = _rows_lock(
            queryset, Q(status__in=EVENT_REPROCESSABLE, payload_removed_at__isnull=True), "id", "status", skip_locked=True
        )
        if rows:
            event_ids = [event_id for event_id, _ in rows]
            _events_reset(event_ids, now)
            DeadLetter.objects.filter(event_id__in=event_ids, status=DeadLetter.Status.OPEN).update(
                status=DeadLetter.Status.REPLAYED, acted_by=user, acted_at=now, note=f"event reprocessed ({via})"
            )
            audit_entries_append(
                entries=[
                    {
                        "action": "event.reprocessed",
                        "actor": _actor(user),
                        "event_id": str(event_id),
                        "data": {"previous_status": previous, "via": via},
                    }
                    for event_id, previous in rows
                ]
            )
            published = [str(event_id) for event_id in event_ids]
            transaction.on_commit(lambda: _events_enqueue(published))
            transaction.on_commit(lambda: metrics.replays.labels(kind="reprocess").inc(len(published)))
    removed = _payload_removed_count(queryset) if total > len(rows) else 0
    return BulkOutcome(acted=len(rows), skipped=total - len(rows), payload_removed=removed)


def webhook_event_reprocess(*, event: WebhookEvent, user, via: str = "admin") -> WebhookEvent:
    outcome = webhook_events_reprocess_bulk(queryset=WebhookEvent.objects.filter(pk=event.pk), user=user, via=via)
    if outcome.payload_removed:
        raise event_payload_removed_error(event)
    if not outcome.acted:
        raise EventInFlight(f"event {event.pk} is being processed or waiting to be; it cannot be reprocessed now")
    event.refresh_from_db(fields=["status", "attempts", "last_error", "dispatched_at"])
    return event


# --- Selectors ------------------------------------------------------------------------------------------


def dead_letter_list() -> QuerySet[DeadLetter]:
    return DeadLetter.objects.select_related("event", "event__endpoint").defer(
        "event__body_encrypted", "event__headers_encrypted"
    )


def webhook_events_for_replay(
    *, endpoint, since, until, event_type: str | None = None, statuses: list[str] | None = None
) -> QuerySet[WebhookEvent]:
    queryset = WebhookEvent.objects.filter(endpoint=endpoint, received_at__gte=since, received_at__lt=until)
    if event_type:
        queryset = queryset.filter(event_type=event_type)
    if statuses:
        queryset = queryset.filter(status__in=statuses)
    # Oldest first, and a stable order among equal times, so `--limit` batches do not overlap or skip.
    return queryset.order_by("received_at", "id")


def dead_letter_stats() -> dict:
    """DLQ depth and how long the oldest unfinished event has waited (None when nothing waits)."""
    now = timezone.now()
    open_count = DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).count()
    oldest_event = (
        WebhookEvent.objects.filter(status__in=EVENT_UNFINISHED)
        .order_by("received_at")
        .values_list("received_at", flat=True)
        .first()
    )
    oldest_open = (
        DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
        .order_by("last_failed_at")
        .values_list("last_failed_at", flat=True)
        .first()
    )

    def age(moment) -> float | None:
        return None if moment is None else max((now - moment) / timedelta(seconds=1), 0.0)

    return {
        "open": open_count,
        "oldest_unprocessed_event_age_seconds": age(oldest_event),
        "oldest_open_dead_letter_age_seconds": age(oldest_open),
    }
