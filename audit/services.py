import hashlib
import re
import uuid

from django.db import connection, transaction
from django.utils import timezone

from audit import chain
from audit.exceptions import AuditChainBroken, AuditError, InvalidAuditActor, UnknownAuditAction
from audit.models import AuditAction, AuditChainHead, AuditEntry, AuditSubject
from audit.redaction import audit_data_shape, redact_text
from config.blind_index import blind_index
from config.unit_of_work import UnitOfWork

_ACTOR = re.compile(r"^(?:system|[1-9][0-9]{0,18})$")

# Rows per INSERT in a bulk append (Django lowers it to fit SQLite's parameter limit), and dedup
# keys per lookup: SQLite takes at most 32,766 parameters per statement.
BULK_BATCH_SIZE = 1000
_KEY_LOOKUP_BATCH_SIZE = 10_000


def _dedup_key_clean(dedup_key: str | None) -> str | None:
    if dedup_key is None:
        return None
    dedup_key = str(dedup_key)
    # A key is stored in clear and unique; one that carries personal data, or is too long, is
    # stored as its hash instead (still unique per key, so the semantics do not change).
    if len(dedup_key) > 200 or redact_text(dedup_key) != dedup_key:
        return "sha256:" + hashlib.sha256(dedup_key.encode()).hexdigest()
    return dedup_key


def _chain_head_lock() -> AuditChainHead:
    """Lock the chain head row until the caller's transaction ends.

    The row is created by `migrate` (`audit_chain_head_ensure`), never here: a missing head means the
    tables were emptied or the head removed, and starting a fresh chain would hide that.
    """
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        raise AuditChainBroken("the audit chain head row is missing; run verify_audit_chain")
    return head


def audit_chain_head_ensure(*, using: str = "default") -> bool:
    """Create the chain head at genesis if the log has never been started; True if created.

    Runs after every `migrate` (post_migrate, as the schema owner), so the head exists before the
    first append and after a test flush. It is not created when entries exist without it: that log
    is broken and `verify_audit_chain` must say so.
    """
    with transaction.atomic(using=using):
        if AuditChainHead.objects.using(using).filter(pk=1).exists() or AuditEntry.objects.using(using).exists():
            return False
        AuditChainHead.objects.using(using).create(pk=1, last_id=0, last_hash=chain.GENESIS_HASH)
        return True


def _entry_insert(entry: AuditEntry) -> bool:
    """INSERT … ON CONFLICT (dedup_key) DO NOTHING; False when the key was already written."""
    opts = AuditEntry._meta
    quote = connection.ops.quote_name
    fields = [opts.get_field(name) for name in ("id", "action", "occurred_at", "actor", "event_id", "data", "dedup_key", "prev_hash", "entry_hash")]
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({quote('dedup_key')}) DO NOTHING RETURNING {quote('id')}"
    )
    params = [field.get_db_prep_save(getattr(entry, field.attname), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


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
    *, id: int, prev_hash: str, action, actor, event_id, data, subject_pairs, dedup_key, key: bytes | None = None
) -> AuditEntry:
    """The unsaved entry at position `id`, hashed onto `prev_hash` under the chain key."""
    entry = AuditEntry(
        id=id,
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
    it records. Appends are serialised by a lock on the chain head that is held until that
    transaction ends, so call this late in the transaction. `data` always passes through the
    redactor; `subjects` values (a str or a list of str per kind) are stored only as blind-index
    hashes.

    With a unit of work (event processing: several entries in one transaction) the entry is
    validated here, so a bad one still raises where it is made, and written when `uow` is flushed,
    together with the others and in order, exactly as one-by-one appends would write them: the chain
    head is then locked once, at the end, so concurrent workers wait on each other only from there
    to their commit. Returns None in that case.
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
    depend on the number of entries beyond one INSERT per `BULK_BATCH_SIZE` rows; the chain head
    is locked once, until the caller's transaction ends, and moved once.
    """
    prepared = [_entry_prepare(**entry) for entry in entries]
    if not prepared:
        return []
    return _entries_append_chained(prepared)


# No savepoint: inside the caller's transaction an audit failure fails the caller's work anyway,
# and SAVEPOINT/RELEASE would be two more round trips while the chain is locked. Validation runs
# before this, so a refused entry does not spoil the caller's transaction.
@transaction.atomic(savepoint=False)
def _entry_append_chained(*, action, actor, event_id, data, subject_pairs, dedup_key) -> AuditEntry | None:
    # Fast path for redeliveries: skip the chain lock when the entry is already committed. The
    # unique constraint, not this read, is what guarantees a single entry.
    if dedup_key is not None and AuditEntry.objects.filter(dedup_key=dedup_key).exists():
        return None

    head = _chain_head_lock()
    entry = _entry_chain(
        id=head.last_id + 1, prev_hash=head.last_hash, action=action, actor=actor, event_id=event_id,
        data=data, subject_pairs=subject_pairs, dedup_key=dedup_key,
    )
    if not _entry_insert(entry):
        return None
    entry._state.adding = False
    if subject_pairs:
        AuditSubject.objects.bulk_create(AuditSubject(entry_id=entry.id, kind=kind, value_hash=value_hash) for kind, value_hash in subject_pairs)
    AuditChainHead.objects.filter(pk=1).update(last_id=entry.id, last_hash=entry.entry_hash)
    return entry


# No savepoint, as above: the caller's transaction is the unit.
@transaction.atomic(savepoint=False)
def _entries_append_chained(prepared: list[dict]) -> list[AuditEntry]:
    # Lock first, then read the keys: every earlier appender has committed or rolled back once we
    # hold the lock, so (under READ COMMITTED) this read sees every key that can conflict and the
    # INSERTs below never hit the unique constraint. A conflict there would be a bug, and raises.
    head = _chain_head_lock()
    keys = sorted({item["dedup_key"] for item in prepared if item["dedup_key"] is not None})
    seen: set[str] = set()
    for start in range(0, len(keys), _KEY_LOOKUP_BATCH_SIZE):
        chunk = keys[start : start + _KEY_LOOKUP_BATCH_SIZE]
        seen.update(AuditEntry.objects.filter(dedup_key__in=chunk).values_list("dedup_key", flat=True))

    written: list[AuditEntry] = []
    subjects: list[AuditSubject] = []
    last_id, last_hash = head.last_id, head.last_hash
    key = chain.chain_key()
    for item in prepared:
        dedup_key = item["dedup_key"]
        if dedup_key is not None:
            if dedup_key in seen:
                continue
            seen.add(dedup_key)
        entry = _entry_chain(id=last_id + 1, prev_hash=last_hash, key=key, **item)
        written.append(entry)
        subjects.extend(AuditSubject(entry_id=entry.id, kind=kind, value_hash=value_hash) for kind, value_hash in item["subject_pairs"])
        last_id, last_hash = entry.id, entry.entry_hash
    if not written:
        return []

    AuditEntry.objects.bulk_create(written, batch_size=BULK_BATCH_SIZE)
    if subjects:
        AuditSubject.objects.bulk_create(subjects, batch_size=BULK_BATCH_SIZE)
    # One move over the whole batch; the head trigger (migration 0003) checks the links it skips.
    AuditChainHead.objects.filter(pk=1).update(last_id=last_id, last_hash=last_hash)
    return written
