"""What a signature scheme provides. A scheme is one module exposing `scheme`, an instance of this."""

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.views.decorators.debug import sensitive_variables

from config.strict_json import NotStrictJson, strict_json_loads
from providers.exceptions import InvalidPayload, InvalidSignature, MalformedSignature, MissingSignature, TimestampOutOfTolerance

# Bounds on what a request may make us do before its signature verifies. Real senders put one
# signature per active secret (two or three while a secret rolls); 32 entries of either scheme fit
# well inside an 8 KiB header, the usual proxy limit.
MAX_SIGNATURE_ENTRIES = 32
# Unix seconds need 10 digits until 2286; anything longer is not a timestamp, and int() on thousands
# of digits raises (and costs) before any check could refuse it.
MAX_TIMESTAMP_DIGITS = 12
MAX_EVENT_ID_LENGTH = 255  # WebhookEvent.provider_event_id


@dataclass(frozen=True)
class SigningKey:
    """An endpoint secret ready to verify with: `kind` as in EndpointSecret.Kind, `material` the key."""

    kind: str
    material: bytes | object = field(repr=False)  # a repr (error report, log) never shows a key


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

    def verify_all(
        self, *, headers: Mapping[str, str], body: bytes, keys: Sequence[SigningKey], tolerance: int, now: float
    ) -> list[VerifiedDelivery]:
        """Every event one request delivers: one for most providers; a scheme whose requests carry
        several events (Adyen's notification items) overrides this, and each is stored on its own.
        All-or-nothing: if any part fails verification, nothing is stored."""
        return [self.verify(headers=headers, body=body, keys=keys, tolerance=tolerance, now=now)]

    # The body of a 2xx answer when the provider expects its own (Adyen: `[accepted]`); None: JSON.
    accepted_answer: bytes | None = None

    def sign(self, *, secret: str, body: bytes, timestamp: int, event_id: str) -> dict[str, str]:
        """The headers a provider would send; used by send_test_webhook, tests and benchmarks."""
        raise NotImplementedError

    def signed_request(self, *, secret: str, body: bytes, timestamp: int, event_id: str) -> tuple[bytes, dict[str, str]]:
        """(body, headers) as the provider would send them. Most providers sign in a header; one that
        signs inside the body (Adyen) overrides this. What send_test_webhook posts."""
        return body, self.sign(secret=secret, body=body, timestamp=timestamp, event_id=event_id)

    def sample(self, event_type: str, *, mode: str) -> tuple[bytes, str]:
        """A sample delivery of `event_type` for an endpoint in `mode`: (body, the id to sign with).
        Raises KeyError naming the types it knows when it has no sample of that type."""
        raise NotImplementedError

    def facts(self, payload: dict, *, provider_event_id: str = "") -> list:
        """The canonical facts (canonical.facts.Fact) of a stored payload; [] means ignored.

        `provider_event_id` is the stored event's: a scheme that stores one event per item of a
        delivery (Adyen) picks its item by it.
        """
        return []

    def mode_mismatch(self, payload: dict, *, mode: str) -> bool:
        """True when the payload says it comes from the other mode (live/test) than the endpoint's:
        it is stored and ignored, never fulfilled. Schemes that cannot tell answer False."""
        return False

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


@sensitive_variables("body")
def json_strict_loads(body: bytes):
    """The verified body as strict RFC 8259 JSON (config.strict_json), or InvalidPayload."""
    try:
        return strict_json_loads(body)
    except NotStrictJson:
        raise InvalidPayload("the body is not strict JSON") from None


def json_object_parse(body: bytes) -> dict:
    payload = json_strict_loads(body)
    if not isinstance(payload, dict):
        raise InvalidPayload("the body is not a JSON object")
    return payload


def event_type_get(payload: dict, field: str = "type") -> str:
    # The type is a label for lists and filters; PostgreSQL text cannot hold NUL, so drop it. A signed
    # value that is not a string is no type.
    value = payload.get(field)
    return value.replace("\x00", "")[:128] if isinstance(value, str) else ""


def provider_event_id_get(payload: dict, field: str) -> str:
    """The provider's event id at `payload[field]`: what follows `<slug>:` in the idempotency key."""
    event_id = payload.get(field)
    if not isinstance(event_id, str) or not event_id:
        raise InvalidPayload(f"the payload has no {field}")
    event_id_check(event_id)
    return event_id


def event_id_check(event_id: str) -> None:
    if len(event_id) > MAX_EVENT_ID_LENGTH or "\x00" in event_id:
        raise InvalidPayload("the event id is too long or holds a NUL character")


_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")


def rfc3339_parse(value: object) -> datetime | None:
    """An RFC 3339 date-time (Paddle's `occurred_at`, PayPal's `create_time`) in UTC, or None if it is
    not one. More than six fractional digits are cut to Python's microseconds."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    fraction = f".{(fraction + '000000')[:6]}" if fraction else ""
    try:
        return event_time_utc(datetime.fromisoformat(f"{day}T{clock}{fraction}{offset}"))
    except ValueError:
        return None


# A provider's event time outside these years is no event time: a signed `0001-01-01T00:00:00+14:00`
# has no UTC value (Python and the databases overflow), and a year 9999 would sort after every real
# event. Such a time is treated as absent; the event is still stored and processed.
EVENT_YEARS = range(1970, 3000)


def event_time_utc(value: datetime | None) -> datetime | None:
    """`value` (aware, or naive meaning UTC) in UTC, or None when it is out of range."""
    if value is None:
        return None
    try:
        value = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        return None
    return value if value.year in EVENT_YEARS else None


def timestamped_hex_signatures_parse(header: str, *, name: str, separator: str, timestamp_key: str, signature_key: str):
    """(timestamp, [32-byte signatures]) of a `t=<unix><sep>v1=<hex>[<sep>v1=<hex>…]`-shaped header, as
    Stripe (`,`, t, v1) and Paddle (`;`, ts, h1) send it.

    Bounded before any crypto: a header with more items than a sender could mean is refused before it
    is split, and a value that cannot be a hex HMAC-SHA256 is skipped (one unreadable value must not
    hide a valid one beside it). Other keys (Stripe's test-mode v0, a future algorithm) are ignored.
    """
    if header.count(separator) >= 2 * MAX_SIGNATURE_ENTRIES:
        raise MalformedSignature(f"{name} has too many items")
    timestamp = None
    signatures = set()
    for item in header.split(separator):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise MalformedSignature(f"{name} has an item without '='")
        if key == timestamp_key:
            if timestamp is not None:
                raise MalformedSignature(f"{name} has more than one {timestamp_key}")
            timestamp = timestamp_parse(value, name=f"{name} {timestamp_key}")
        elif key == signature_key:
            if len(value) != 64:
                continue
            try:
                signatures.add(bytes.fromhex(value))
            except ValueError:
                continue
    if len(signatures) > MAX_SIGNATURE_ENTRIES:
        raise MalformedSignature(f"{name} has too many {signature_key} signatures")
    if timestamp is None or not signatures:
        raise MalformedSignature(f"{name} needs {timestamp_key} and at least one {signature_key}")
    return timestamp, list(signatures)


@sensitive_variables("body", "keys", "signed", "macs")
def timestamped_hmac_payload(
    *, headers: Mapping[str, str], body: bytes, keys: Sequence[SigningKey], tolerance: int, now: float,
    header_name: str, separator: str, timestamp_key: str, signature_key: str, joiner: bytes,
) -> tuple[dict, str]:
    """(payload, header) of a delivery signed as Stripe and Paddle sign: HMAC-SHA256 keyed by the whole
    secret over `"{timestamp}{joiner}{raw body}"`, hex entries in one header (several while a secret
    rotates). One MAC per active key, however many entries the header carries; the signature is
    checked before the time, and both before the body is parsed."""
    header = headers.get(header_name)
    if not header:
        raise MissingSignature(f"no {header_name} header")
    timestamp, signatures = timestamped_hex_signatures_parse(
        header, name=header_name, separator=separator, timestamp_key=timestamp_key, signature_key=signature_key
    )
    signed = str(timestamp).encode() + joiner + body
    macs = [hmac_sha256(key.material, signed) for key in keys if key.kind == "hmac"]
    if not any_mac_matches(macs, signatures):
        raise InvalidSignature("no signature matches an active secret")
    timestamp_check(timestamp, tolerance=tolerance, now=now)
    return json_object_parse(body), header
