"""Canonical facts: what a scheme's adapter extracts from a provider payload.

Fulfilment never sees provider JSON, only these. A fact holds ids, amounts and keyed hashes;
personal data a later step needs (a buyer's email for the receipt) is carried encrypted.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from config import encryption
from config.blind_index import blind_index


@dataclass(frozen=True)
class Fact:
    type: str  # e.g. "payhook.payment.succeeded.v1"
    subject: str  # the provider object the fact is about (payment intent, subscription, …)
    time: datetime  # the provider's event time: orders out-of-order deliveries
    data: dict = field(default_factory=dict)
    suffix: str = ""  # distinguishes several facts of one provider event in the idempotency key


def email_hash(email: str) -> str:
    """Keyed hash of a normalised email (the blind index): links buyers without storing the address."""
    return blind_index(email, kind="email")


def buyer(*, user_id: object = None, provider_customer_id: object = None, email: object = None) -> dict:
    email = email.strip() if isinstance(email, str) and "@" in email else None
    return {
        "user_id": str(user_id)[:255] if user_id not in (None, "") else None,
        "provider_customer_id": provider_customer_id if isinstance(provider_customer_id, str) else None,
        "email_hash": email_hash(email) if email else None,
        "email_encrypted": encryption.encrypt(email.encode()).decode() if email else None,
    }


def timestamp_iso(value: object) -> str | None:
    if isinstance(value, int) and value > 0:
        return datetime.fromtimestamp(value, UTC).isoformat()
    return None
