"""Canonical events: CloudEvents 1.0 envelopes around the facts a scheme's adapter extracts.

Each type's `data` is validated against its JSON Schema (canonical/schemas/<type>.json, draft
2020-12, additionalProperties false) when the event is built. A breaking change to a type is a new
file with a new version, never an edit of a published one.
"""

import functools
import json
import uuid
from pathlib import Path

from jsonschema import Draft202012Validator

from canonical.exceptions import CanonicalEventInvalid
from canonical.facts import Fact

SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_BASE_URL = "https://payhook.invalid/schemas/"
_ID_NAMESPACE = uuid.UUID("6f1c9f52-5d8a-4a53-9d4b-2f0d7c1e8a10")


@functools.cache
def _validator(event_type: str) -> Draft202012Validator:
    path = SCHEMA_DIR / f"{event_type}.json"
    if not path.is_file():
        raise CanonicalEventInvalid(f"no schema for canonical type {event_type}")
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def known_types() -> list[str]:
    return sorted(path.stem for path in SCHEMA_DIR.glob("*.json"))


def canonical_event_build(*, fact: Fact, idempotency_key: str, source: str, correlation_id: str, index: int, count: int) -> dict:
    errors = sorted(_validator(fact.type).iter_errors(fact.data), key=lambda error: list(error.path))
    if errors:
        # The path and validator name only: a message may quote the offending value.
        where = "/".join(str(part) for part in errors[0].path) or "(root)"
        raise CanonicalEventInvalid(f"{fact.type} data invalid at {where}: {errors[0].validator}")
    suffix = fact.suffix or (f"{index}" if count > 1 else "")
    key = f"{idempotency_key}:{suffix}" if suffix else idempotency_key
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid5(_ID_NAMESPACE, key)),
        "source": source,
        "type": fact.type,
        "subject": fact.subject,
        "time": fact.time.isoformat(),
        "datacontenttype": "application/json",
        "dataschema": f"{SCHEMA_BASE_URL}{fact.type}.json",
        "idempotencykey": key,
        "correlationid": correlation_id,
        "data": fact.data,
    }


def canonical_events_build(facts: list[Fact], *, idempotency_key: str, source: str, correlation_id: str) -> list[dict]:
    """The envelopes of one stored event's facts: `idempotency_key` is the stored event's, suffixed
    where it yields several; `source` is `/webhooks/<slug>`; `correlation_id` the stored event's id."""
    return [
        canonical_event_build(fact=fact, idempotency_key=idempotency_key, source=source, correlation_id=correlation_id,
                              index=i, count=len(facts))
        for i, fact in enumerate(facts)
    ]
