from collections.abc import Iterator

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Prefetch, QuerySet

from audit import chain
from audit.exceptions import AuditChainBroken
from audit.hashing import blind_index_candidates
from audit.models import AuditChainHead, AuditEntry, AuditSubject


def audit_entry_list() -> QuerySet[AuditEntry]:
    return AuditEntry.objects.all()


def audit_entry_filter_subject(queryset: QuerySet[AuditEntry], *, q: str) -> QuerySet[AuditEntry]:
    """Entries with a subject equal to `q` (an email, customer id, user id…), matched by hash.

    `q` is hashed under every subject kind and every configured key, and never stored.
    """
    hashes = blind_index_candidates(q)
    return queryset.filter(Exists(AuditSubject.objects.filter(entry=OuterRef("pk"), value_hash__in=hashes)))


def _entries_in_order(chunk_size: int) -> Iterator[AuditEntry]:
    subjects = Prefetch("subjects", queryset=AuditSubject.objects.only("entry_id", "kind", "value_hash"))
    # iterator() streams (a server-side cursor on PostgreSQL); the prefetch runs once per chunk.
    return AuditEntry.objects.order_by("id").prefetch_related(subjects).iterator(chunk_size=chunk_size)


def _chain_walk(chunk_size: int) -> tuple[int, str]:
    head = AuditChainHead.objects.filter(pk=1).first()
    prev_hash, expected_id, count = chain.GENESIS_HASH, 1, 0
    for entry in _entries_in_order(chunk_size):
        if entry.id != expected_id:
            raise AuditChainBroken(
                f"audit entry {entry.id}: entry {expected_id} is missing before it (removed)", entry_id=entry.id
            )
        if entry.prev_hash != prev_hash:
            raise AuditChainBroken(
                f"audit entry {entry.id}: prev_hash does not match the previous entry (altered, removed or inserted)",
                entry_id=entry.id,
            )
        content = chain.entry_content(
            id=entry.id, action=entry.action, occurred_at=entry.occurred_at, actor=entry.actor,
            event_id=entry.event_id, data=entry.data, dedup_key=entry.dedup_key,
            subjects=[(subject.kind, subject.value_hash) for subject in entry.subjects.all()],
        )
        if chain.entry_hash(entry.prev_hash, content) != entry.entry_hash:
            raise AuditChainBroken(f"audit entry {entry.id}: content does not match its hash (altered)", entry_id=entry.id)
        prev_hash, expected_id, count = entry.entry_hash, expected_id + 1, count + 1
    last_id = expected_id - 1
    head_id, head_hash = (head.last_id, head.last_hash) if head else (0, chain.GENESIS_HASH)
    if (head_id, head_hash) != (last_id, prev_hash):
        if head is None:
            reason = "the chain head row is missing"
        elif head_id > last_id:
            reason = f"entries after {last_id} were removed (the chain head names entry {head_id})"
        else:
            reason = f"the chain head names entry {head_id} with another hash (altered)"
        raise AuditChainBroken(f"audit entry {head_id if head_id > last_id else last_id}: {reason}", entry_id=head_id or last_id)
    return count, prev_hash


def audit_chain_verify(*, chunk_size: int = 2000) -> tuple[int, str]:
    """Walk the whole chain; (entry count, last hash) or AuditChainBroken naming the first bad entry.

    Catches an entry altered, removed (also from the end) or inserted by anyone who did not also
    recompute every later hash and the chain head. Publishing the last hash elsewhere from time to
    time makes even that detectable.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return _chain_walk(chunk_size)
    # One snapshot for the whole walk, so appends committing meanwhile cannot look like tampering.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _chain_walk(chunk_size)
