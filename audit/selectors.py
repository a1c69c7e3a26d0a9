from collections.abc import Iterator

from django.db import connection, transaction
from django.db.models import Prefetch, QuerySet

from audit import chain
from audit.exceptions import AuditChainBroken
from audit.models import AuditChainHead, AuditEntry, AuditSubject
from config.blind_index import blind_index_candidates


def audit_entry_list() -> QuerySet[AuditEntry]:
    return AuditEntry.objects.all()


def audit_entry_filter_subject(queryset: QuerySet[AuditEntry], *, q: str) -> QuerySet[AuditEntry]:
    """Entries with a subject equal to `q` (an email, customer id, user id…), matched by hash.

    `q` is hashed under every subject kind and every configured key, and never stored.

    Written as `id IN (SELECT entry_id … WHERE value_hash IN …)`: the matching entry ids come from
    the covering index (value_hash, entry_id) alone, and the entries are then fetched by primary
    key, so the cost follows the number of matches, not the size of the log (docs/benchmarks.md,
    "Audit search at 10 M entries").
    """
    hashes = blind_index_candidates(q)
    return queryset.filter(id__in=AuditSubject.objects.filter(value_hash__in=hashes).values("entry_id"))


# Below this many rows an exact COUNT(*) is cheap, and exact is better.
_COUNT_ESTIMATE_FROM = 100_000


def audit_entry_count_estimate() -> int | None:
    """The planner's row count of the log (kept by autovacuum/ANALYZE) when it is large, else None.

    For a changelist's page count, where an exact COUNT(*) would read millions of rows.
    """
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [AuditEntry._meta.db_table])
        row = cursor.fetchone()
    return row[0] if row and row[0] >= _COUNT_ESTIMATE_FROM else None


def _entries_in_order(chunk_size: int) -> Iterator[AuditEntry]:
    subjects = Prefetch("subjects", queryset=AuditSubject.objects.only("entry_id", "kind", "value_hash"))
    # iterator() streams (a server-side cursor on PostgreSQL); the prefetch runs once per chunk.
    return AuditEntry.objects.order_by("id").prefetch_related(subjects).iterator(chunk_size=chunk_size)


def _keyed_from() -> int:
    """Id of the first keyed entry: the first `audit.chain_keyed` entry, else 1 (keyed throughout)."""
    sealed = AuditEntry.objects.filter(action=chain.CHAIN_KEYED_ACTION).order_by("id").values_list("id", flat=True).first()
    return sealed or 1


def _chain_walk(chunk_size: int) -> tuple[int, int, str]:
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None:
        # Created by migrate before any append: without it, emptied tables would pass as a new log.
        raise AuditChainBroken("audit chain head: the head row is missing (log emptied or head removed)")
    # Entries before the seal were hashed before the chain was keyed; the seal's keyed hash covers them.
    # Without a seal every entry must be keyed, so removing the seal (or never having one) cannot
    # downgrade a log to plain SHA-256.
    keyed_from = _keyed_from()
    key = chain.chain_key()
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
        if entry.id < keyed_from:
            expected = chain.entry_hash_unkeyed(entry.prev_hash, content)
        else:
            expected = chain.entry_hash(entry.prev_hash, content, key=key)
        # Plain comparison: this is an offline check (no timing oracle), and a tampered hash may hold
        # any characters, which compare_digest refuses.
        if expected != entry.entry_hash:
            raise AuditChainBroken(
                f"audit entry {entry.id}: content does not match its hash (altered, or another AUDIT_CHAIN_KEY)",
                entry_id=entry.id,
            )
        prev_hash, expected_id, count = entry.entry_hash, expected_id + 1, count + 1
    last_id = expected_id - 1
    if (head.last_id, head.last_hash) != (last_id, prev_hash):
        if head.last_id > last_id:
            reason = f"entries after {last_id} were removed (the chain head names entry {head.last_id})"
        elif head.last_id < last_id:
            reason = f"entries after the chain head ({head.last_id}) were added outside an append"
        else:
            reason = "the chain head names it with another hash (altered)"
        entry_id = max(head.last_id, last_id)
        raise AuditChainBroken(f"audit entry {entry_id}: {reason}", entry_id=entry_id)
    return count, last_id, prev_hash


def _expected_head_check(expect_head: tuple[int, str]) -> None:
    """The chain (already verified) still holds entry `id` with `hash`: nothing up to it was rewritten."""
    expected_id, expected_hash = expect_head
    if expected_id == 0:
        found = chain.GENESIS_HASH
    else:
        found = AuditEntry.objects.filter(pk=expected_id).values_list("entry_hash", flat=True).first()
    if found is None:
        raise AuditChainBroken(
            f"audit entry {expected_id}: the expected head is no longer in the log (cut short)", entry_id=expected_id
        )
    if found != expected_hash:
        raise AuditChainBroken(
            f"audit entry {expected_id}: its hash differs from the expected head (rewritten)", entry_id=expected_id
        )


def _verify(chunk_size: int, expect_head: tuple[int, str] | None) -> tuple[int, int, str]:
    result = _chain_walk(chunk_size)
    if expect_head is not None:
        _expected_head_check(expect_head)
    return result


def audit_chain_verify(*, chunk_size: int = 2000, expect_head: tuple[int, str] | None = None) -> tuple[int, int, str]:
    """Walk the whole chain; (entry count, head id, head hash) or AuditChainBroken naming the bad entry.

    Catches an entry altered, removed (also from the end, or all of them) or inserted by anyone who
    does not hold AUDIT_CHAIN_KEY. With `expect_head` (an id and hash published earlier) it also
    catches a rewrite by someone who does: the log must still hold that entry with that hash.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return _verify(chunk_size, expect_head)
    # One snapshot for the whole walk, so appends committing meanwhile cannot look like tampering.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _verify(chunk_size, expect_head)


def audit_chain_head_get() -> dict:
    """The chain head as published: its entry id and hash, and how many entries the log holds.

    Raises AuditChainBroken when the head row is missing or names an entry the log does not hold
    with that hash (the cheap check; `verify_audit_chain` walks everything).
    """
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None:
        raise AuditChainBroken("audit chain head: the head row is missing")
    if head.last_id:
        stored = AuditEntry.objects.filter(pk=head.last_id).values_list("entry_hash", flat=True).first()
        if stored != head.last_hash:
            raise AuditChainBroken(f"audit entry {head.last_id}: the chain head does not match it", entry_id=head.last_id)
    return {"id": head.last_id, "hash": head.last_hash, "count": AuditEntry.objects.count()}
