import hashlib
import os
import re
import threading
import uuid

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import chain
from audit.exceptions import AuditChainBroken, AuditError, InvalidAuditActor, UnknownAuditAction
from audit.models import AuditAction, AuditChainAnchor, AuditChainHead, AuditEntry, AuditSubject
from audit.redaction import audit_data_shape, redact_text
from config.blind_index import blind_index
from config.unit_of_work import UnitOfWork

_ACTOR = re.compile(r"^(?:system|[1-9][0-9]{0,18})$")

# Rows per INSERT in a bulk append (Django lowers it to fit SQLite's parameter limit), and dedup
# keys per lookup: SQLite takes at most 32,766 parameters per statement.
BULK_BATCH_SIZE = 1000
_KEY_LOOKUP_BATCH_SIZE = 10_000
# Where entry ids come from on PostgreSQL (migration 0006).
ID_SEQUENCE = "audit_auditentry_id_seq"
_ENTRY_COLUMNS = (
    "id", "chain_shard", "chain_seq", "action", "occurred_at", "actor", "event_id", "data", "dedup_key", "prev_hash",
    "entry_hash",
)


def _dedup_key_clean(dedup_key: str | None) -> str | None:
    if dedup_key is None:
        return None
    dedup_key = str(dedup_key)
    # A key is stored in clear and unique; one that carries personal data, or is too long, is
    # stored as its hash instead (still unique per key, so the semantics do not change).
    if len(dedup_key) > 200 or redact_text(dedup_key) != dedup_key:
        return "sha256:" + hashlib.sha256(dedup_key.encode()).hexdigest()
    return dedup_key


def _preferred_shard() -> int:
    """This process's (and thread's) first-choice shard, so that each appender tends to keep to one.

    Only a starting point: the lock takes the next free head after it when it is busy.
    """
    return (os.getpid() * 31 + threading.get_ident()) % max(settings.AUDIT_CHAIN_SHARDS, 1) + 1


def _chain_shard_lock(*, ids: int) -> tuple[AuditChainHead, list[int]]:
    """Lock one shard's head until the caller's transaction ends, and take `ids` fresh entry ids.

    The head is the first free one from this process's preferred shard on (SKIP LOCKED), so
    concurrent appenders never wait on each other while any head is free; only when every head is
    taken does it wait, for the preferred one. The ids come in the same round trip: from the
    sequence on PostgreSQL (gaps allowed: a rolled-back or unneeded id is never reused), MAX(id) + 1…
    on SQLite, whose appends hold the database's write lock anyway.

    Heads are created by `migrate` (`audit_chain_head_ensure`), never here: no head means the
    tables were emptied or the heads removed, and starting a fresh chain would hide that.
    """
    table = connection.ops.quote_name(AuditChainHead._meta.db_table)
    # Rows from the preferred shard up, then the ones below it: every head is a candidate, in an
    # order that differs between processes.
    order = "ORDER BY (id >= %s) DESC, id LIMIT 1"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            select = (
                f"SELECT id, last_seq, last_hash, ARRAY(SELECT nextval('{ID_SEQUENCE}') FROM generate_series(1, %s)) "
                f"FROM {table} {order}"
            )
            params = [ids, _preferred_shard()]
            cursor.execute(f"{select} FOR UPDATE SKIP LOCKED", params)
            row = cursor.fetchone()
            if row is None:
                cursor.execute(f"{select} FOR UPDATE", params)
                row = cursor.fetchone()
        else:
            # SQLite (make run): the transaction holds the database's write lock (transaction_mode
            # IMMEDIATE), so there is nothing to lock or skip.
            entries = connection.ops.quote_name(AuditEntry._meta.db_table)
            cursor.execute(f"SELECT id, last_seq, last_hash, (SELECT COALESCE(MAX(id), 0) FROM {entries}) FROM {table} {order}",
                           [_preferred_shard()])
            row = cursor.fetchone()
            if row is not None:
                row = (*row[:3], list(range(row[3] + 1, row[3] + 1 + ids)))
    if row is None:
        raise AuditChainBroken("the audit chain head row is missing; run verify_audit_chain")
    return AuditChainHead(id=row[0], last_seq=row[1], last_hash=row[2]), sorted(row[3])


def audit_chain_head_ensure(*, using: str = "default") -> bool:
    """Create the missing shard heads at genesis, up to AUDIT_CHAIN_SHARDS; True if any was created.

    Runs after every `migrate` (post_migrate, as the schema owner), so the heads exist before the
    first append and after a test flush, and a raised AUDIT_CHAIN_SHARDS adds shards. Heads are
    only ever added past the highest one (a lowered setting removes none: the rows are the record),
    and none is created when entries exist without any head: that log is broken and
    `verify_audit_chain` must say so.
    """
    with transaction.atomic(using=using):
        heads = AuditChainHead.objects.using(using)
        highest = heads.order_by("-id").values_list("id", flat=True).first()
        if highest is None and AuditEntry.objects.using(using).exists():
            return False
        wanted = range((highest or 0) + 1, settings.AUDIT_CHAIN_SHARDS + 1)
        heads.bulk_create(AuditChainHead(id=shard, last_seq=0, last_hash=chain.GENESIS_HASH) for shard in wanted)
        return len(wanted) > 0


def _entries_insert(entries: list[AuditEntry]) -> set[int]:
    """INSERT … ON CONFLICT (dedup_key) DO NOTHING RETURNING id, in batches; the ids written."""
    opts = AuditEntry._meta
    quote = connection.ops.quote_name
    fields = [opts.get_field(name) for name in _ENTRY_COLUMNS]
    row = f"({', '.join(['%s'] * len(fields))})"
    inserted: set[int] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(entries), BULK_BATCH_SIZE):
            batch = entries[start : start + BULK_BATCH_SIZE]
            sql = (
                f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
                f"VALUES {', '.join([row] * len(batch))} "
                f"ON CONFLICT ({quote('dedup_key')}) DO NOTHING RETURNING {quote('id')}"
            )
            params = [field.get_db_prep_save(getattr(entry, field.attname), connection) for entry in batch for field in fields]
            cursor.execute(sql, params)
            inserted.update(r[0] for r in cursor.fetchall())
    return inserted


def _subject_pairs(subjects: dict | None) -> list[tuple[str, str]]:
    """Sorted, distinct (kind, blind-index hash) pairs; a value may be a str or a list/tuple of str.

    The chain hashes these pairs as it always has, so entries written before lists were allowed
    still verify; two spellings of one value (an email's case) are one pair.
    """
    pairs = set()
    for kind, values in (subjects or {}).items():
        for value in values if isinstance(values, list | tuple) else [values]:
            if value not in (None, ""):
                pairs.add((kind, blind_index(str(value), kind=kind)))
    return sorted(pairs)


def _entry_prepare(
    *,
    action: str,
    actor: str = "system",
    event_id=None,
    data: dict | None = None,
    subjects: dict[str, str | list[str]] | None = None,
    dedup_key: str | None = None,
) -> dict:
    """Validate and redact one entry's arguments; no database work, so a refusal spoils nothing."""
    if action not in AuditAction.values:
        raise UnknownAuditAction(f"unknown audit action {action!r}")
    actor = str(actor)
    if not _ACTOR.match(actor):
        raise InvalidAuditActor("actor must be 'system' or a numeric user id")
    try:
        event_uuid = uuid.UUID(str(event_id)) if event_id else None
    except ValueError:
        raise AuditError("event_id must be a UUID") from None
    subject_pairs = _subject_pairs(subjects)
    return {
        "action": action,
        "actor": actor,
        "event_id": event_uuid,
        # Only the keys the action's allow-list names, each of its kind (audit/actions.py);
        # personal identifiers reach the entry only as `subjects` hashes.
        "data": audit_data_shape(action=action, data=data or {}),
        "subject_pairs": subject_pairs,
        "dedup_key": _dedup_key_clean(dedup_key),
    }


def _entry_chain(
    *, id: int, shard: int, seq: int, prev_hash: str, action, actor, event_id, data, subject_pairs, dedup_key,
    key: bytes | None = None,
) -> AuditEntry:
    """The unsaved entry `id` at position `seq` of `shard`, hashed onto `prev_hash` under the chain key.

    The hashed content is what it always was (id included, not the position): entries written before
    the chain was sharded keep verifying, and the position is bound by `prev_hash`, which names the
    entry before it in its shard.
    """
    entry = AuditEntry(
        id=id,
        chain_shard=shard,
        chain_seq=seq,
        action=action,
        occurred_at=timezone.now(),
        actor=actor,
        event_id=event_id,
        data=data,
        dedup_key=dedup_key,
        prev_hash=prev_hash,
    )
    content = chain.entry_content(
        id=id, action=action, occurred_at=entry.occurred_at, actor=actor, event_id=event_id,
        data=data, dedup_key=dedup_key, subjects=subject_pairs,
    )
    entry.entry_hash = chain.entry_hash(prev_hash, content, key=key)
    return entry


def audit_entry_append(
    *,
    action: str,
    actor: str = "system",
    event_id=None,
    data: dict | None = None,
    subjects: dict[str, str | list[str]] | None = None,
    dedup_key: str | None = None,
    uow: UnitOfWork | None = None,
) -> AuditEntry | None:
    """Append one redacted entry to the hash chain; None when `dedup_key` was already written.

    Meant to run inside the caller's transaction: the entry commits or rolls back with the effect
    it records. The append locks one free shard head until that transaction ends (other
    transactions use other shards meanwhile), so still call this late in the transaction. `data` always passes through the
    redactor; `subjects` values (a str or a list of str per kind) are stored only as blind-index
    hashes.

    With a unit of work (event processing: several entries in one transaction) the entry is
    validated here, so a bad one still raises where it is made, and written when `uow` is flushed,
    together with the others and in order, exactly as one-by-one appends would write them, into one
    shard: its head is then locked once, at the end, until the commit. Returns None in that case.
    """
    prepared = _entry_prepare(
        action=action, actor=actor, event_id=event_id, data=data, subjects=subjects, dedup_key=dedup_key
    )
    if uow is not None:
        uow.defer(writer=_entries_append_chained, item=prepared)
        return None
    return _entry_append_chained(**prepared)


def audit_entries_append(*, entries: list[dict]) -> list[AuditEntry]:
    """Append many entries as `audit_entry_append(**entry)` would one by one, in order.

    Each dict holds `audit_entry_append`'s keyword arguments. The rows, hashes and subjects are the
    same as those of the one-by-one calls; an entry whose `dedup_key` is already written, or comes
    earlier in `entries`, is skipped. Returns the entries written, in chain order (skipped ones
    are left out). Every entry is validated and redacted before any database work, so one refused
    entry writes nothing and does not spoil the caller's transaction. The statement count does not
    depend on the number of entries beyond one INSERT per `BULK_BATCH_SIZE` rows; one shard head
    is locked once, until the caller's transaction ends, and moved once.
    """
    prepared = [_entry_prepare(**entry) for entry in entries]
    if not prepared:
        return []
    return _entries_append_chained(prepared)


@transaction.atomic(savepoint=False)
def _entry_append_chained(*, action, actor, event_id, data, subject_pairs, dedup_key) -> AuditEntry | None:
    # Fast path for redeliveries: skip the shard lock when the entry is already committed. The
    # unique constraint, not this read, is what guarantees a single entry.
    if dedup_key is not None and AuditEntry.objects.filter(dedup_key=dedup_key).exists():
        return None
    written = _entries_append_chained([{
        "action": action, "actor": actor, "event_id": event_id, "data": data, "subject_pairs": subject_pairs,
        "dedup_key": dedup_key,
    }])
    return written[0] if written else None


# No savepoint around the whole append: inside the caller's transaction an audit failure fails the
# caller's work anyway. Validation runs before this, so a refused entry does not spoil it.
@transaction.atomic(savepoint=False)
def _entries_append_chained(prepared: list[dict]) -> list[AuditEntry]:
    """Write `prepared` (validated entries) to ONE shard, in order, skipping dedup keys already written.

    Lock a free shard head, read which dedup keys are already committed, chain the rest onto the
    head and INSERT them with ON CONFLICT (dedup_key) DO NOTHING. Another shard's appender may be
    writing the same key at the same moment (the read above cannot see it before it commits): its
    INSERT then waits for that transaction, and if it committed the row is skipped. A skipped row
    would leave a hole in this shard's chain, so in that case the INSERT is rolled back to a
    savepoint and the batch chained again without the keys now written. Exactly once comes from the
    unique constraint; the chain never holds a gap.
    """
    head, ids = _chain_shard_lock(ids=len(prepared))
    keys = sorted({item["dedup_key"] for item in prepared if item["dedup_key"] is not None})
    seen: set[str] = set()
    for start in range(0, len(keys), _KEY_LOOKUP_BATCH_SIZE):
        chunk = keys[start : start + _KEY_LOOKUP_BATCH_SIZE]
        seen.update(AuditEntry.objects.filter(dedup_key__in=chunk).values_list("dedup_key", flat=True))

    key = chain.chain_key()
    savepoint = connection.vendor == "postgresql"  # SQLite: one writer at a time, no concurrent key
    while True:
        todo: list[dict] = []
        batch_keys = set(seen)
        for item in prepared:
            dedup_key = item["dedup_key"]
            if dedup_key is not None:
                if dedup_key in batch_keys:
                    continue
                batch_keys.add(dedup_key)
            todo.append(item)
        if not todo:
            return []
        written: list[AuditEntry] = []
        seq, last_hash = head.last_seq, head.last_hash
        for entry_id, item in zip(ids, todo):
            seq += 1
            entry = _entry_chain(id=entry_id, shard=head.id, seq=seq, prev_hash=last_hash, key=key, **item)
            written.append(entry)
            last_hash = entry.entry_hash
        if savepoint and any(item["dedup_key"] is not None for item in todo):
            with connection.cursor() as cursor:
                cursor.execute("SAVEPOINT audit_entries_insert")
        inserted = _entries_insert(written)
        if len(inserted) == len(written):
            break
        if not savepoint:  # SQLite: one writer at a time, so a key cannot appear between read and INSERT
            raise AuditError("an audit dedup key appeared between its read and its INSERT")
        # A concurrent appender committed some of these keys meanwhile: forget this attempt and chain
        # the rest again (on the same ids: none of them was committed).
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK TO SAVEPOINT audit_entries_insert")
        seen.update(entry.dedup_key for entry in written if entry.id not in inserted and entry.dedup_key is not None)

    subjects = [
        (entry.id, kind, value_hash) for entry, item in zip(written, todo) for kind, value_hash in item["subject_pairs"]
    ]
    for entry in written:
        entry._state.adding = False
    _subjects_insert_head_move(subjects, shard=head.id, last_seq=seq, last_hash=last_hash)
    return written


def _subjects_insert_head_move(subjects: list[tuple[int, str, str]], *, shard: int, last_seq: int, last_hash: str) -> None:
    """INSERT the subjects and move the shard head over the batch (the head trigger, migration 0006,
    checks the links it skips). On PostgreSQL the last subject batch and the move are one statement
    (a data-modifying WITH): every round trip is paid while the shard is held, and on a busy machine
    the round trips, not the hashing, are what an append costs (docs/benchmarks.md, issue 13)."""
    head_move = AuditChainHead.objects.filter(pk=shard)
    if connection.vendor != "postgresql" or not subjects:
        if subjects:
            AuditSubject.objects.bulk_create(
                (AuditSubject(entry_id=entry_id, kind=kind, value_hash=value_hash) for entry_id, kind, value_hash in subjects),
                batch_size=BULK_BATCH_SIZE,
            )
        head_move.update(last_seq=last_seq, last_hash=last_hash)
        return
    last_batch = (len(subjects) - 1) // BULK_BATCH_SIZE * BULK_BATCH_SIZE
    if last_batch:
        AuditSubject.objects.bulk_create(
            (AuditSubject(entry_id=entry_id, kind=kind, value_hash=value_hash) for entry_id, kind, value_hash in subjects[:last_batch]),
            batch_size=BULK_BATCH_SIZE,
        )
    quote = connection.ops.quote_name
    rows = subjects[last_batch:]
    sql = (
        f"WITH {quote('subjects')} AS (INSERT INTO {quote(AuditSubject._meta.db_table)} "
        f"({quote('entry_id')}, {quote('kind')}, {quote('value_hash')}) VALUES {', '.join(['(%s, %s, %s)'] * len(rows))}) "
        f"UPDATE {quote(AuditChainHead._meta.db_table)} SET {quote('last_seq')} = %s, {quote('last_hash')} = %s "
        f"WHERE {quote('id')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row] + [last_seq, last_hash, shard])


def _heads_read() -> dict[int, tuple[int, str]]:
    return {shard: (seq, last_hash) for shard, seq, last_hash in AuditChainHead.objects.values_list("id", "last_seq", "last_hash")}


@transaction.atomic
def audit_chain_anchor_write() -> AuditChainAnchor:
    """Record every shard head, keyed and chained onto the previous anchor (docs/audit.md).

    The heads are read as committed, each naming an entry that exists; writers of anchors take
    turns (an advisory lock on PostgreSQL, the write lock on SQLite), so anchor ids stay gapless.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('audit_chain_anchor_write'))")
    last = AuditChainAnchor.objects.order_by("-id").values_list("id", "anchor_hash").first()
    last_id, prev_hash = last if last else (0, chain.GENESIS_HASH)
    heads = _heads_read()
    anchor = AuditChainAnchor(
        id=last_id + 1, created_at=timezone.now(), prev_hash=prev_hash,
        heads={str(shard): [seq, last_hash] for shard, (seq, last_hash) in sorted(heads.items())},
    )
    content = chain.anchor_content(id=anchor.id, created_at=anchor.created_at, heads=heads)
    anchor.anchor_hash = chain.entry_hash(prev_hash, content)
    anchor.save(force_insert=True)
    return anchor
