"""What a signature scheme provides. A scheme is one module exposing `scheme`, an instance of this."""

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from webhooks.exceptions import InvalidPayload, TimestampOutOfTolerance


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


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def timestamp_check(timestamp: int, *, tolerance: int, now: float) -> None:
    if abs(now - timestamp) > tolerance:
        raise TimestampOutOfTolerance("the signed timestamp is outside the tolerance window")


def json_object_parse(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidPayload("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidPayload("the body is not a JSON object")
    return payload


def event_type_get(payload: dict) -> str:
    # The type is a label for lists and filters; PostgreSQL text cannot hold NUL, so drop it.
    return str(payload.get("type") or "").replace("\x00", "")[:128]
