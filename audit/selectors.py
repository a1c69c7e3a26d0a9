from collections.abc import Iterator

from django.db import connection, transaction
from django.db.models import Prefetch, QuerySet

from audit import chain
from audit.exceptions import AuditChainBroken
from audit.models import AuditChainAnchor, AuditChainHead, AuditEntry, AuditSubject
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
    # Shard by shard, each in chain order (the unique index on the position). iterator() streams (a
    # server-side cursor on PostgreSQL); the prefetch runs once per chunk.
    entries = AuditEntry.objects.order_by("chain_shard", "chain_seq").prefetch_related(subjects)
    return entries.iterator(chunk_size=chunk_size)


def _keyed_from() -> int:
    """Id of the first keyed entry: the first `audit.chain_keyed` entry, else 1 (keyed throughout).

    Only a log from before the chain was keyed has one, and all of that log is shard 1's history
    (migration 0006), with ids below every later entry's.
    """
    sealed = AuditEntry.objects.filter(action=chain.CHAIN_KEYED_ACTION).order_by("id").values_list("id", flat=True).first()
    return sealed or 1


def _shard_head_check(shard: int, head: AuditChainHead | None, last_seq: int, last_hash: str, last_entry_id: int | None) -> None:
    """The shard's head names its last entry (walked up to `last_seq`, `last_hash`)."""
    if head is None:
        raise AuditChainBroken(
            f"audit entry {last_entry_id}: shard {shard} has entries but no chain head (head removed)",
            entry_id=last_entry_id,
        )
    if (head.last_seq, head.last_hash) == (last_seq, last_hash):
        return
    if head.last_seq > last_seq:
        reason = f"entries after #{last_seq} were removed (the chain head names #{head.last_seq})"
    elif head.last_seq < last_seq:
        reason = f"entries after the chain head (#{head.last_seq}) were added outside an append"
    else:
        reason = "the chain head names its last entry with another hash (altered)"
    raise AuditChainBroken(f"audit chain shard {shard}: {reason}", entry_id=last_entry_id)


def _chain_walk(chunk_size: int) -> tuple[int, dict[int, tuple[int, str]], int, str]:
    """Every shard walked; (count, {shard: (last_seq, last_hash)}, newest entry id, its hash)."""
    heads = {head.id: head for head in AuditChainHead.objects.all()}
    if not heads:
        # Created by migrate before any append: without them, emptied tables would pass as a new log.
        raise AuditChainBroken("audit chain head: the head row is missing (log emptied or head removed)")
    # Entries before the seal were hashed before the chain was keyed; the seal's keyed hash covers them.
    # Without a seal every entry must be keyed, so removing the seal (or never having one) cannot
    # downgrade a log to plain SHA-256.
    keyed_from = _keyed_from()
    key = chain.chain_key()
    walked: dict[int, tuple[int, str]] = {}
    count, newest_id, newest_hash = 0, 0, chain.GENESIS_HASH
    shard, prev_hash, expected_seq, last_entry_id = None, chain.GENESIS_HASH, 1, None
    for entry in _entries_in_order(chunk_size):
        if entry.chain_shard != shard:
            if shard is not None:
                _shard_head_check(shard, heads.get(shard), expected_seq - 1, prev_hash, last_entry_id)
                walked[shard] = (expected_seq - 1, prev_hash)
            shard, prev_hash, expected_seq = entry.chain_shard, chain.GENESIS_HASH, 1
        if entry.chain_seq != expected_seq:
            raise AuditChainBroken(
                f"audit entry {entry.id}: #{expected_seq} of shard {shard} is missing before it (removed)", entry_id=entry.id
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
        prev_hash, expected_seq, count, last_entry_id = entry.entry_hash, expected_seq + 1, count + 1, entry.id
        if entry.id > newest_id:
            newest_id, newest_hash = entry.id, entry.entry_hash
    if shard is not None:
        _shard_head_check(shard, heads.get(shard), expected_seq - 1, prev_hash, last_entry_id)
        walked[shard] = (expected_seq - 1, prev_hash)
    # Heads of shards with no entry at all must still be at genesis.
    for head_shard, head in heads.items():
        if head_shard not in walked:
            _shard_head_check(head_shard, head, 0, chain.GENESIS_HASH, None)
            walked[head_shard] = (0, chain.GENESIS_HASH)
    return count, walked, newest_id, newest_hash


def _anchors_check(walked: dict[int, tuple[int, str]]) -> None:
    """The anchors form an unbroken keyed chain in which no shard moves back or disappears, and every
    shard still holds the position and hash the newest anchor names (nor was it cut below it)."""
    key = chain.chain_key()
    prev_hash, expected_id, previous, newest = chain.GENESIS_HASH, 1, {}, None
    for anchor in AuditChainAnchor.objects.order_by("id").iterator(chunk_size=2000):
        if anchor.id != expected_id or anchor.prev_hash != prev_hash:
            raise AuditChainBroken(f"audit chain anchor {anchor.id}: anchor {expected_id} is missing or was altered before it")
        heads = {int(shard): (int(seq), last_hash) for shard, (seq, last_hash) in anchor.heads.items()}
        content = chain.anchor_content(id=anchor.id, created_at=anchor.created_at, heads=heads)
        if chain.entry_hash(anchor.prev_hash, content, key=key) != anchor.anchor_hash:
            raise AuditChainBroken(f"audit chain anchor {anchor.id}: content does not match its hash (altered)")
        for shard, (seq, _) in previous.items():
            if heads.get(shard, (-1, ""))[0] < seq:
                raise AuditChainBroken(f"audit chain anchor {anchor.id}: shard {shard} went back from #{seq} (altered)")
        prev_hash, expected_id, previous, newest = anchor.anchor_hash, expected_id + 1, heads, anchor
    for shard, (seq, anchored_hash) in previous.items():
        if shard not in walked:
            raise AuditChainBroken(f"audit chain shard {shard}: its head is gone (anchor {newest.id} names #{seq})")
        if seq == 0:
            continue
        last_seq, _ = walked[shard]
        if last_seq < seq:
            raise AuditChainBroken(
                f"audit chain shard {shard}: cut short at #{last_seq}, below anchor {newest.id} (it names #{seq})"
            )
        found = AuditEntry.objects.filter(chain_shard=shard, chain_seq=seq).values_list("id", "entry_hash").first()
        if found is None or found[1] != anchored_hash:
            entry_id = found[0] if found else None
            raise AuditChainBroken(
                f"audit entry {entry_id}: shard {shard} #{seq} differs from anchor {newest.id} (rewritten)", entry_id=entry_id
            )


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
    count, walked, newest_id, newest_hash = _chain_walk(chunk_size)
    _anchors_check(walked)
    if expect_head is not None:
        _expected_head_check(expect_head)
    return count, newest_id, newest_hash


def audit_chain_verify(*, chunk_size: int = 2000, expect_head: tuple[int, str] | None = None) -> tuple[int, int, str]:
    """Walk every shard; (entry count, head id, head hash) or AuditChainBroken naming the bad entry.

    The head is the newest entry (highest id) and its hash; (0, genesis) for an empty log. Catches an
    entry altered, removed (also from a shard's end, or all of them), inserted or moved to another
    shard by anyone who does not hold AUDIT_CHAIN_KEY, and a shard cut below the newest anchor. With
    `expect_head` (an entry id and hash published earlier) it also catches a rewrite by someone who
    does: the log must still hold that entry with that hash, so its shard up to it is unchanged.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return _verify(chunk_size, expect_head)
    # One snapshot for the whole walk, so appends committing meanwhile cannot look like tampering.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _verify(chunk_size, expect_head)


def audit_chain_head_get() -> dict:
    """The chain head as published: the newest entry's id and hash, and how many entries the log holds.

    Raises AuditChainBroken when no head row exists or a shard head names an entry the log does not
    hold with that hash (the cheap check; `verify_audit_chain` walks everything).
    """
    heads = list(AuditChainHead.objects.filter(last_seq__gt=0).values_list("id", "last_seq", "last_hash"))
    if not heads and not AuditChainHead.objects.exists():
        raise AuditChainBroken("audit chain head: the head row is missing")
    for shard, seq, last_hash in heads:
        stored = AuditEntry.objects.filter(chain_shard=shard, chain_seq=seq).values_list("id", "entry_hash").first()
        if stored is None or stored[1] != last_hash:
            entry_id = stored[0] if stored else None
            raise AuditChainBroken(f"audit entry {entry_id}: the head of shard {shard} does not match it", entry_id=entry_id)
    newest = AuditEntry.objects.order_by("-id").values_list("id", "entry_hash").first() or (0, chain.GENESIS_HASH)
    return {"id": newest[0], "hash": newest[1], "count": AuditEntry.objects.count()}
