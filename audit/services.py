import hashlib
import re
import uuid

from django.db import connection, transaction
from django.utils import timezone

from audit import chain
from audit.exceptions import AuditError, InvalidAuditActor, UnknownAuditAction
from audit.hashing import blind_index
from audit.models import AuditAction, AuditChainHead, AuditEntry, AuditSubject
from audit.redaction import redact, redact_text

_ACTOR = re.compile(r"^(?:system|[1-9][0-9]{0,18})$")


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
    """Lock the chain head row until the caller's transaction ends (created on first use)."""
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        # A concurrent first append blocks on the primary key here and then finds the row.
        AuditChainHead.objects.get_or_create(pk=1, defaults={"last_id": 0, "last_hash": chain.GENESIS_HASH})
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


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


def audit_entry_append(
    *,
    action: str,
    actor: str = "system",
    event_id=None,
    data: dict | None = None,
    subjects: dict[str, str] | None = None,
    dedup_key: str | None = None,
) -> AuditEntry | None:
    """Append one redacted entry to the hash chain; None when `dedup_key` was already written.

    Meant to run inside the caller's transaction: the entry commits or rolls back with the effect
    it records. Appends are serialised by a lock on the chain head that is held until that
    transaction ends, so call this late in the transaction. `data` always passes through the
    redactor; `subjects` values are stored only as blind-index hashes.
    """
    if action not in AuditAction.values:
        raise UnknownAuditAction(f"unknown audit action {action!r}")
    actor = str(actor)
    if not _ACTOR.match(actor):
        raise InvalidAuditActor("actor must be 'system' or a numeric user id")
    try:
        event_uuid = uuid.UUID(str(event_id)) if event_id else None
    except ValueError:
        raise AuditError("event_id must be a UUID") from None
    subject_pairs = sorted(
        (kind, blind_index(str(value), kind=kind)) for kind, value in (subjects or {}).items() if value not in (None, "")
    )
    # A subject email is known personal data: scrub it from `data` wherever it recurs, also in
    # forms no detector would see. Ids (customer, user) are pseudonymous and stay allowed.
    known = [(str(value), "email") for kind, value in (subjects or {}).items() if kind == "email" and value]
    redacted = redact(data or {}, known=known)
    dedup_key = _dedup_key_clean(dedup_key)
    return _entry_append_chained(
        action=action, actor=actor, event_id=event_uuid, data=redacted, subject_pairs=subject_pairs, dedup_key=dedup_key
    )


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
    entry = AuditEntry(
        id=head.last_id + 1,
        action=action,
        occurred_at=timezone.now(),
        actor=actor,
        event_id=event_id,
        data=data,
        dedup_key=dedup_key,
        prev_hash=head.last_hash,
    )
    content = chain.entry_content(
        id=entry.id, action=action, occurred_at=entry.occurred_at, actor=actor, event_id=event_id,
        data=data, dedup_key=dedup_key, subjects=subject_pairs,
    )
    entry.entry_hash = chain.entry_hash(entry.prev_hash, content)
    if not _entry_insert(entry):
        return None
    entry._state.adding = False
    if subject_pairs:
        AuditSubject.objects.bulk_create(AuditSubject(entry_id=entry.id, kind=kind, value_hash=value_hash) for kind, value_hash in subject_pairs)
    AuditChainHead.objects.filter(pk=1).update(last_id=entry.id, last_hash=entry.entry_hash)
    return entry
