"""Processing a stored event: lease it, count the attempt, build its canonical events with its
provider's adapter and hand them to the consumers (fulfilment, notifications, audit) in one
transaction; a transient failure is retried, a permanent one becomes a dead letter."""

import json
import logging
import os
import secrets
import socket
import traceback
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone
from structlog.contextvars import bind_contextvars

from audit.services import audit_entry_append
from canonical.envelope import canonical_events_build
from canonical.subjects import canonical_subjects
from config.exceptions import ApplicationError
from config.unit_of_work import UnitOfWork
from fulfillment.reads import BatchReads, FulfilmentReads
from fulfillment.services import canonical_event_fulfil
from providers import scheme_get
from webhooks.deadletters import dead_letter_record
from webhooks.models import WebhookEvent
from webhooks.outbox import WAITING
from webhooks.receiving import webhook_event_body

logger = logging.getLogger(__name__)



class PoisonEvent(Exception):
    """An event whose processing keeps dying (the worker is killed) before it can fail cleanly."""


# --- Leases: which live worker holds an event ------------------------------------------------------
#
# A worker leases the events of a message before it starts on them (holder `host:pid:token`, expiry
# now + WEBHOOK_LEASE_SECONDS) and renews the lease while it works through them. If it dies, the
# lease lapses and the sweep republishes the events within WEBHOOK_LEASE_SECONDS plus one sweep
# interval, instead of waiting for the broker's visibility timeout. The lease says who should work
# on an event; what stops two workers running one event at once is the row lock the processing
# transaction takes (SELECT … FOR UPDATE SKIP LOCKED) and its status check, so a lease that lapses
# under a live but slow worker costs a spare message, never a second run. Times are the workers'
# clocks (NTP keeps them within milliseconds; a lease lasts tens of seconds).

_holder: dict[str, object] = {"pid": None, "name": ""}


def lease_holder_name() -> str:
    """This process's name on leases: `host:pid:token`. The random token tells a process from an
    earlier one that had the same pid; it is made again after a fork."""
    pid = os.getpid()
    if _holder["pid"] != pid:
        _holder.update(pid=pid, name=f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}")
    return _holder["name"]


def _lease_expiry(now):
    return now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)


def _holder_process_gone(holder: str) -> bool:
    """True when `holder` names a process on this host that no longer exists (killed, OOM, crashed)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or holder == lease_holder_name():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a live process of another user: the pid was reused, the holder may be elsewhere
    try:  # a killed child its parent has not reaped yet is a zombie: gone too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def webhook_events_lease(*, event_ids: list[str]) -> set[str]:
    """Take or renew this process's lease on those of `event_ids` still waiting to be processed.

    Returns the ids this process now holds. An event is left out when it is finished, locked by a
    worker processing it, or leased by another live process. A lease held by a process of this host
    that has died (a pool process SIGKILLed, its message redelivered to its replacement) is taken
    over at once rather than after it lapses.
    """
    if not event_ids:
        return set()
    holder, now = lease_holder_name(), timezone.now()
    meta, quote, ops = WebhookEvent._meta, connection.ops.quote_name, connection.ops
    table = quote(meta.db_table)
    pks = [meta.pk.get_db_prep_value(meta.pk.to_python(event_id), connection) for event_id in event_ids]
    # SKIP LOCKED: a row being processed right now is not waited for (its holder is alive).
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    with connection.cursor() as cursor:  # one autocommitted statement
        cursor.execute(
            f"UPDATE {table} SET lease_holder = %s, lease_expires_at = %s WHERE id IN ("
            f"SELECT id FROM {table} WHERE id IN ({', '.join(['%s'] * len(pks))}) AND status IN (%s, %s, %s) "
            f"AND (lease_holder = %s OR lease_expires_at IS NULL OR lease_expires_at < %s){skip_locked}) RETURNING id",
            [holder, ops.adapt_datetimefield_value(_lease_expiry(now)), *pks, *WAITING, holder,
             ops.adapt_datetimefield_value(now)],
        )
        held = {str(meta.pk.to_python(row[0])) for row in cursor.fetchall()}
    others = [event_id for event_id in map(str, event_ids) if event_id not in held]
    if others:
        held |= _leases_of_dead_holders_take(others, holder)
    return held


def _leases_of_dead_holders_take(event_ids: list[str], holder: str) -> set[str]:
    taken = set()
    host = socket.gethostname()
    leased = WebhookEvent.objects.filter(
        id__in=event_ids, status__in=WAITING, lease_holder__startswith=f"{host}:"
    ).values_list("id", "lease_holder")
    for event_id, other in leased:
        if not _holder_process_gone(other):
            continue
        # Conditional on the dead holder: of two processes taking over, one wins.
        if WebhookEvent.objects.filter(id=event_id, lease_holder=other, status__in=WAITING).update(
            lease_holder=holder, lease_expires_at=_lease_expiry(timezone.now())
        ):
            logger.warning("lease taken over from a dead process: event=%s holder=%s", event_id, other)
            taken.add(str(event_id))
    return taken


def _attempt_claim(event_id: str) -> int | None:
    """Count an attempt in its own committed transaction, before any work, and (re)take the lease.

    Brokers do not count redeliveries, so a poison event that kills its worker every time would loop
    forever; this counter survives the crash. Returns the attempt number, or None when the event is
    not waiting for processing (already done, ignored or dead) or another live process holds it.
    """
    holder, now = lease_holder_name(), timezone.now()
    meta, quote, ops = WebhookEvent._meta, connection.ops.quote_name, connection.ops
    pk = meta.pk.get_db_prep_value(meta.pk.to_python(event_id), connection)
    with connection.cursor() as cursor:  # one autocommitted statement
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET attempts = attempts + 1, status = %s, lease_holder = %s, "
            f"lease_expires_at = %s WHERE id = %s AND status IN (%s, %s, %s) "
            f"AND (lease_holder = %s OR lease_expires_at IS NULL OR lease_expires_at < %s) RETURNING attempts",
            [WebhookEvent.Status.PROCESSING, holder, ops.adapt_datetimefield_value(_lease_expiry(now)), pk, *WAITING,
             holder, ops.adapt_datetimefield_value(now)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def webhook_events_claim(*, event_ids: list[str]) -> dict[str, int]:
    """Count the first attempt of every event of `event_ids` never tried before, in ONE autocommitted
    statement, and (re)take their leases. Returns {event id: attempts} of those claimed.

    For the set-based path (webhook_events_fulfil): the attempts are durable before any work, as
    `_attempt_claim` makes them for one event. Only first attempts are claimed together: an event
    tried before may be the poison that killed the worker running its batch, so it (and every
    event of that batch, now at attempt 1) runs one by one, claimed alone, and cannot take the
    others of its message down with it again.
    """
    if not event_ids:
        return {}
    holder, now = lease_holder_name(), timezone.now()
    meta, quote, ops = WebhookEvent._meta, connection.ops.quote_name, connection.ops
    pks = [meta.pk.get_db_prep_value(meta.pk.to_python(event_id), connection) for event_id in event_ids]
    with connection.cursor() as cursor:  # one autocommitted statement
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET attempts = attempts + 1, status = %s, lease_holder = %s, "
            f"lease_expires_at = %s WHERE id IN ({', '.join(['%s'] * len(pks))}) AND status IN (%s, %s, %s) "
            f"AND attempts = 0 AND (lease_holder = %s OR lease_expires_at IS NULL OR lease_expires_at < %s) "
            f"RETURNING id, attempts",
            [WebhookEvent.Status.PROCESSING, holder, ops.adapt_datetimefield_value(_lease_expiry(now)), *pks, *WAITING,
             holder, ops.adapt_datetimefield_value(now)],
        )
        return {str(meta.pk.to_python(event_id)): attempts for event_id, attempts in cursor.fetchall()}


def webhook_event_process(*, event_id: str, attempts: int | None = None) -> str | None:
    """Fulfil one stored event. Returns its final status, or None if there was nothing to do.

    Counts the attempt first (`_attempt_claim`), unless `attempts` says this process counted it
    already (webhook_events_claim, before a batch that failed and is now run one by one).

    Raises TransientError-class exceptions (database, broker) for the task to retry; permanent
    failures (ApplicationError with permanent=True) and poison events become dead letters here.
    """
    if attempts is None:
        attempts = _attempt_claim(event_id)
    if attempts is None:
        return None
    # On an event's lines `attempt` is its attempt counter, which counts redeliveries and retries.
    bind_contextvars(attempt=attempts)
    if attempts > settings.WEBHOOK_MAX_ATTEMPTS:
        # No subjects: building the event's facts may be what keeps killing the worker.
        return _dead_letter(event_id, PoisonEvent(f"gave up after {attempts - 1} attempts"), attempts - 1, subjects={})
    try:
        with transaction.atomic():
            # SKIP LOCKED: if another worker holds this event, it will finish it; this message is spare.
            event = (
                WebhookEvent.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("endpoint")
                .filter(id=event_id, status=WebhookEvent.Status.PROCESSING)
                .first()
            )
            if event is None:
                return None
            event.status = webhook_event_fulfil(event=event)
            event.processed_at = timezone.now()
            event.last_error = ""
            event.lease_holder, event.lease_expires_at = "", None
            event.save(update_fields=["status", "processed_at", "last_error", "lease_holder", "lease_expires_at"])
            return event.status
    except ApplicationError as exc:
        if not exc.permanent:
            raise
        return _dead_letter(event_id, exc, attempts)


# --- Fulfilling a batch of claimed events together -------------------------------------------------


def webhook_events_fulfil(*, event_ids: list[str]) -> list[tuple[str, str, str]]:
    """Fulfil claimed events (webhook_events_claim) together, in ONE transaction. Returns (event id,
    endpoint slug, `processed` or `ignored`) in `event_ids` order; an event another worker holds is
    left out.

    One statement locks the rows; the CPU work (decrypt, canonical events) runs for all of them;
    the catalog, user and preference reads of the batch are made once (fulfillment/reads.py); the
    effects are applied event by event in `event_ids` order (received order) by the same rules as
    one by one, so an event sees what the earlier ones of the batch did; then one UPDATE marks every
    row, one unit of work writes all audit entries (one chain-head lock, bulk INSERTs) and hands
    the e-mails to one after-commit hook, and one commit ends it. Anything that raises rolls the
    whole batch back: the caller then runs the events one by one, so a bad event fails alone.
    """
    statuses: dict[str, str] = {}
    with transaction.atomic():
        # SKIP LOCKED: a row another worker holds is its to finish, as one by one.
        events = {
            str(event.id): event
            for event in WebhookEvent.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(id__in=event_ids, status=WebhookEvent.Status.PROCESSING)
        }
        # Each event once, in message order: an id repeated in a message is a redelivery, done already.
        ordered = [events[event_id] for event_id in dict.fromkeys(map(str, event_ids)) if event_id in events]
        built = {str(event.id): _event_build(event=event) for event in ordered}
        reads = BatchReads(provider_events=[(event.endpoint.scheme, built[str(event.id)][2]) for event in ordered])
        uow = UnitOfWork()
        for event in ordered:
            # Lines the consumers log about this event carry its id, as one by one.
            bind_contextvars(event_id=str(event.id), correlation_id=str(event.id))
            statuses[str(event.id)] = webhook_event_fulfil(event=event, uow=uow, reads=reads, built=built[str(event.id)])
        ignored = [event.id for event in ordered if statuses[str(event.id)] == WebhookEvent.Status.IGNORED]
        WebhookEvent.objects.filter(id__in=[event.id for event in ordered]).update(
            status=Case(When(id__in=ignored, then=Value(WebhookEvent.Status.IGNORED)), default=Value(WebhookEvent.Status.PROCESSED))
            if ignored else Value(WebhookEvent.Status.PROCESSED),
            processed_at=timezone.now(), last_error="", lease_holder="", lease_expires_at=None,
        )
        uow.flush()  # last: the audit chain head is locked from here to the commit only
    return [(str(event.id), event.endpoint.slug, statuses[str(event.id)]) for event in ordered]


# --- Fulfilling one stored event: provider payload -> canonical events -> consumers -----------------


def webhook_event_canonical_events(*, event: WebhookEvent, payload: dict | None = None) -> list[dict]:
    """The canonical events of a stored event, built from its stored bytes by its provider's adapter.

    Deterministic: what the admin and the API show is what fulfilment consumed.
    """
    if payload is None:
        payload = json.loads(webhook_event_body(event=event))
    facts = scheme_get(event.endpoint.scheme).facts(payload, provider_event_id=event.provider_event_id)
    return canonical_events_build(
        facts, idempotency_key=event.idempotency_key, source=f"/webhooks/{event.endpoint.slug}", correlation_id=str(event.id)
    )


def webhook_event_fulfil(
    *, event: WebhookEvent, uow: UnitOfWork | None = None, reads: FulfilmentReads | None = None, built: tuple | None = None
) -> str:
    """Build the stored event's canonical events and hand each to fulfilment. Returns `processed` or
    `ignored`. Runs inside the processing transaction: a failure anywhere rolls every effect back.

    The event is one unit of work: its audit entries and e-mails are collected and flushed at the
    end, so the audit chain head is locked only from there to the commit, and the event's e-mails
    leave through one after-commit hook. Given `uow` (a batch: webhook_events_fulfil), the entries go
    there and the caller flushes; `reads` and `built` are what the batch prefetched and built.
    """
    if uow is not None:
        return _event_fulfil(event=event, uow=uow, reads=reads, built=built)
    uow = UnitOfWork()
    status = _event_fulfil(event=event, uow=uow, reads=reads, built=built)
    uow.flush()
    return status


def _event_build(*, event: WebhookEvent) -> tuple[dict, bool, list[dict]]:
    """(payload, livemode mismatch, canonical events) of a stored event: decrypt and build, no query."""
    payload = json.loads(webhook_event_body(event=event))
    mismatch = scheme_get(event.endpoint.scheme).mode_mismatch(payload, mode=event.endpoint.mode)
    return payload, mismatch, [] if mismatch else webhook_event_canonical_events(event=event, payload=payload)


def _event_fulfil(*, event: WebhookEvent, uow: UnitOfWork, reads: FulfilmentReads | None = None, built: tuple | None = None) -> str:
    endpoint = event.endpoint
    bind_contextvars(endpoint=endpoint.slug)  # on every line about this event from here on (webhooks/tasks.py)
    _, mismatch, canonical_events = built or _event_build(event=event)
    subjects = canonical_subjects(canonical_events)
    audit_entry_append(
        action="webhook.received",
        event_id=event.id,
        data={
            "endpoint": endpoint.slug, "type": event.event_type, "provider_event_id": event.provider_event_id,
            "canonical_types": [c["type"] for c in canonical_events],
        },
        # The buyer's identifiers (email, customer, user, payment, subscription): a search by any of
        # them finds the event, also a refund that arrived before its payment.
        subjects=subjects,
        dedup_key=f"webhook.received:{event.id}",
        uow=uow,
    )
    if not canonical_events:
        data = {"type": event.event_type, **({"reason": "livemode_mismatch", "mode": endpoint.mode} if mismatch else {})}
        audit_entry_append(action="event.ignored", event_id=event.id, data=data, dedup_key=f"event.ignored:{event.id}", uow=uow)
        if mismatch:
            logger.warning("event ignored: event=%s reason=livemode_mismatch endpoint_mode=%s", event.id, endpoint.mode)
        return WebhookEvent.Status.IGNORED
    for canonical in canonical_events:
        # One fact (most events): its subjects are the event's, already decrypted. Several: each its own.
        canonical_event_fulfil(
            provider=endpoint.scheme, canonical=canonical, event_id=event.id, uow=uow,
            subjects=subjects if len(canonical_events) == 1 else None, reads=reads,
        )
    return WebhookEvent.Status.PROCESSED


def webhook_event_fail(*, event_id: str, exc: BaseException) -> None:
    """A transient failure: leave the event retryable and say why (type only: messages may hold data)."""
    WebhookEvent.objects.filter(id=event_id, status=WebhookEvent.Status.PROCESSING).update(
        status=WebhookEvent.Status.FAILED, last_error=type(exc).__name__, lease_holder="", lease_expires_at=None
    )



def webhook_event_attempts(*, event_id: str) -> int:
    return WebhookEvent.objects.values_list("attempts", flat=True).filter(id=event_id).first() or 0


def webhook_event_dead_letter(*, event_id: str, exc: BaseException) -> str:
    return _dead_letter(event_id, exc, webhook_event_attempts(event_id=event_id))


def _event_subjects(event_id: str) -> dict[str, list[str]]:
    """The buyer subjects of a stored event's canonical events; {} when they cannot be built.

    For a dead letter's audit entry: the event is failing already, so nothing here may raise.
    """
    try:
        # A savepoint: a failing read must not spoil a transaction the caller is in.
        with transaction.atomic():
            event = WebhookEvent.objects.select_related("endpoint").filter(id=event_id).first()
            if event is None:
                return {}
            payload = json.loads(webhook_event_body(event=event))
            if scheme_get(event.endpoint.scheme).mode_mismatch(payload, mode=event.endpoint.mode):
                return {}
            return canonical_subjects(webhook_event_canonical_events(event=event, payload=payload))
    except Exception as exc:  # noqa: BLE001 - any failure means "no subjects", never a second failure
        logger.info("dead letter without subjects: event=%s error=%s", event_id, type(exc).__name__)
        return {}


def _dead_letter(event_id: str, exc: BaseException, attempts: int, *, subjects: dict | None = None) -> str:
    logger.warning("event dead-lettered", extra={"event_id": str(event_id), "error": type(exc).__name__, "attempts": attempts})
    dead_letter_record(
        task_name="webhooks.tasks.webhook_events_process",
        event_id=event_id,
        args=[event_id],
        exc=exc,
        attempts=attempts,
        traceback_text="".join(traceback.format_exception(exc)),
        subjects=_event_subjects(event_id) if subjects is None else subjects,
    )
    WebhookEvent.objects.filter(id=event_id).update(lease_holder="", lease_expires_at=None)
    return WebhookEvent.Status.DEAD
