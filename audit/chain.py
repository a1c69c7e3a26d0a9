"""How an audit entry's hash is computed; shared by appending and verification.

Each entry's hash is HMAC-SHA256, keyed by `AUDIT_CHAIN_KEY`, over the previous entry's hash and
the entry's canonical content. The key lives only in the environment, never in the database, so
someone who can write the audit tables but does not hold the key cannot recompute a valid chain
after changing an entry. Logs written before the chain was keyed keep their plain SHA-256 prefix;
migration 0004 sealed it with one keyed `audit.chain_keyed` entry (see `CHAIN_KEYED_ACTION`).
"""

import hashlib
import hmac
import json
from datetime import UTC

from django.conf import settings

GENESIS_HASH = "0" * 64

# The entry that ends the unkeyed prefix of a log started before the chain was keyed. It is itself
# keyed and covers the last unkeyed entry's hash, so that prefix cannot be rewritten without the key
# either. Entries before the first such entry are checked with plain SHA-256; it and all later
# entries with the key. A log without one is keyed from entry 1. Only migration 0004 writes it: it is
# deliberately not an AuditAction, so the append services refuse it (a later one would un-key the
# entries before it in verification's eyes, and fail them).
CHAIN_KEYED_ACTION = "audit.chain_keyed"


def occurred_at_text(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _numbers_canonical(value):
    # jsonb keeps numbers as decimals and gives an integral float (1e20, 2.0) back as an int, so
    # hash integral floats as ints: the hash must not depend on the round trip.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _numbers_canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_canonical(item) for item in value]
    return value


def entry_content(*, id: int, action: str, occurred_at, actor: str, event_id, data, dedup_key, subjects) -> str:
    """Canonical JSON of everything an entry says, subject hashes included.

    Sorted keys and fixed separators make it independent of dict order and of how the database
    hands JSON back (jsonb reorders keys).
    """
    content = {
        "id": id,
        "action": action,
        "occurred_at": occurred_at_text(occurred_at),
        "actor": actor,
        "event_id": str(event_id) if event_id else None,
        "data": _numbers_canonical(data),
        "dedup_key": dedup_key,
        "subjects": sorted([kind, value_hash] for kind, value_hash in subjects),
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_key() -> bytes:
    key = settings.AUDIT_CHAIN_KEY
    if not key:
        # An empty key would make the "keyed" chain computable by anyone.
        raise ValueError("AUDIT_CHAIN_KEY is empty")
    return key.encode()


def entry_hash(prev_hash: str, content: str, *, key: bytes | None = None) -> str:
    """HMAC-SHA256 of the previous hash and the content under `key` (default: AUDIT_CHAIN_KEY)."""
    return hmac.new(key if key is not None else chain_key(), (prev_hash + content).encode(), hashlib.sha256).hexdigest()


def entry_hash_unkeyed(prev_hash: str, content: str) -> str:
    """The plain SHA-256 of entries written before the chain was keyed; verification only."""
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def anchor_content(*, id: int, created_at, heads: dict) -> str:
    """Canonical JSON of an anchor: its position, time and every shard's (last_seq, last_hash)."""
    content = {
        "id": id,
        "created_at": occurred_at_text(created_at),
        "heads": {str(shard): [int(seq), last_hash] for shard, (seq, last_hash) in heads.items()},
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
