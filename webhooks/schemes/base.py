"""What a signature scheme provides. A scheme is one module exposing `scheme`, an instance of this."""

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from itertools import accumulate
from dataclasses import dataclass, field
from datetime import datetime

from django.views.decorators.debug import sensitive_variables

from webhooks.exceptions import InvalidPayload, MalformedSignature, TimestampOutOfTolerance

# Bounds on what a request may make us do before its signature verifies. Real senders put one
# signature per active secret (two or three while a secret rolls); 32 entries of either scheme fit
# well inside an 8 KiB header, the usual proxy limit.
MAX_SIGNATURE_ENTRIES = 32
# Unix seconds need 10 digits until 2286; anything longer is not a timestamp, and int() on thousands
# of digits raises (and costs) before any check could refuse it.
MAX_TIMESTAMP_DIGITS = 12
# Provider payloads nest a handful of levels; json.loads recurses per level and would raise
# RecursionError somewhere near 1,000, so depth is counted on the bytes before parsing.
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class SigningKey:
    """An endpoint secret ready to verify with: `kind` as in EndpointSecret.Kind, `material` the key."""

    kind: str
    material: bytes | object


@dataclass(frozen=True)
class VerifiedDelivery:
    provider_event_id: str
    event_type: str
    payload: dict
    provider_created_at: datetime | None
    used_headers: dict = field(default_factory=dict)


class Scheme:
    name: str = ""
    # Top-level payload fields the provider changes between deliveries of one event: they do not
    # count as "content" when a redelivery is compared with the stored event.
    volatile_fields: frozenset[str] = frozenset()

    def secret_parse(self, secret: str) -> SigningKey:
        """Validate a secret as typed by an operator; raise InvalidSecret with a reason."""
        raise NotImplementedError

    def verify(
        self, *, headers: Mapping[str, str], body: bytes, keys: Sequence[SigningKey], tolerance: int, now: float
    ) -> VerifiedDelivery:
        """Verify `body` as received; return the delivery or raise a SignatureError/InvalidPayload."""
        raise NotImplementedError

    def sign(self, *, secret: str, body: bytes, timestamp: int, event_id: str) -> dict[str, str]:
        """The headers a provider would send; used by send_test_webhook, tests and benchmarks."""
        raise NotImplementedError

    def facts(self, payload: dict) -> list:
        """The canonical facts (webhooks.schemes.facts.Fact) of a verified payload; [] means ignored."""
        return []

    def content_hash(self, payload: dict) -> str:
        content = {k: v for k, v in payload.items() if k not in self.volatile_fields}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@sensitive_variables("key", "message")
def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@sensitive_variables("macs")
def any_mac_matches(macs: Sequence[bytes], signatures: Sequence[bytes]) -> bool:
    """Each key's MAC is computed once per request by the caller; this only compares, in constant time."""
    return any(hmac.compare_digest(mac, signature) for mac in macs for signature in signatures)


def timestamp_parse(value: str, *, name: str) -> int:
    # isdigit() alone admits digits int() rejects, such as "²"; the length check comes before int().
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_TIMESTAMP_DIGITS):
        raise MalformedSignature(f"{name} is not a unix timestamp")
    return int(value)


def timestamp_check(timestamp: int, *, tolerance: int, now: float) -> None:
    if abs(now - timestamp) > tolerance:
        raise TimestampOutOfTolerance("the signed timestamp is outside the tolerance window")


class _NotStrictJson(ValueError):
    pass


def _constant_refuse(name: str):
    raise _NotStrictJson(f"{name} is not JSON")


def _float_parse(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: valid syntax, but it would be stored and hashed as Infinity
        raise _NotStrictJson("a number out of range")
    return value


def _object_build(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # RFC 8259 leaves duplicate names undefined; parsers disagree on which one wins.
        raise _NotStrictJson("an object with a duplicate key")
    return obj


# A JSON string (so that brackets inside strings are not counted), or one bracket.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(data: bytes) -> int:
    """The deepest bracket nesting of `data`, brackets inside strings ignored; never recurses."""
    steps = (_DEPTH_STEP.get(m.group()[0], 0) for m in _STRING_OR_BRACKET.finditer(data))
    return max(accumulate(steps), default=0)


@sensitive_variables("body", "text", "payload")
def json_strict_loads(body: bytes):
    """Parse strict RFC 8259 JSON or raise InvalidPayload: UTF-8 only, no NaN/Infinity, no duplicate
    keys, no lone surrogates, at most MAX_JSON_DEPTH levels deep."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidPayload("the body nests deeper than allowed")
    try:
        text = body.decode("utf-8")  # json.loads(bytes) would also accept UTF-16 and UTF-32
        payload = json.loads(
            text, parse_constant=_constant_refuse, parse_float=_float_parse, object_pairs_hook=_object_build
        )
        # "\ud800" parses to a lone surrogate that no UTF-8 encoder (nor PostgreSQL) accepts.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidPayload("the body is not strict JSON") from None
    return payload


def json_object_parse(body: bytes) -> dict:
    payload = json_strict_loads(body)
    if not isinstance(payload, dict):
        raise InvalidPayload("the body is not a JSON object")
    return payload


def event_type_get(payload: dict) -> str:
    # The type is a label for lists and filters; PostgreSQL text cannot hold NUL, so drop it.
    return str(payload.get("type") or "").replace("\x00", "")[:128]
