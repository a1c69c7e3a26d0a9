"""How an audit entry's hash is computed; shared by appending and verification."""

import hashlib
import json
from datetime import UTC

GENESIS_HASH = "0" * 64


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


def entry_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()
