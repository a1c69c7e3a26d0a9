"""The buyer's identifiers in canonical events, as audit subjects (`{kind: [values]}`).

Every audit entry that concerns a buyer carries them, so support finds a customer's whole story by
any one of them whatever order the events arrived in: the payment and its refund share `payment`.
Kinds: `email` (the buyer's address, decrypted here only to be hashed by the audit log), `customer`
(the provider's customer id), `user` (our user id, as the provider echoes it), `payment` (the
provider's payment id a payment, its refunds and disputes share: the facts' `payment_intent`) and
`subscription` (the provider's subscription id). Values stay in memory; the audit log stores each
only as a blind-index hash.
"""

import logging

from config import encryption

logger = logging.getLogger(__name__)

BUYER_SUBJECT_KINDS = ("email", "customer", "user", "payment", "subscription")


def _email(token: object) -> str | None:
    if not isinstance(token, str) or not token:
        return None
    try:
        return encryption.decrypt(token.encode()).decode()
    except (encryption.InvalidToken, UnicodeDecodeError):
        # A token under a key no longer configured: the event is still recorded, without this subject.
        logger.warning("canonical subjects: the buyer's email does not decrypt; left out")
        return None


def _event_values(event: dict) -> list[tuple[str, object]]:
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict):
        return []
    buyer = data.get("buyer") if isinstance(data.get("buyer"), dict) else {}
    return [
        ("email", _email(buyer.get("email_encrypted"))),
        ("customer", buyer.get("provider_customer_id")),
        ("user", buyer.get("user_id")),
        ("payment", data.get("payment_intent")),
        ("subscription", data.get("subscription")),
    ]


def canonical_subjects(events: list[dict]) -> dict[str, list[str]]:
    """The buyer subjects of `events` (one stored event's canonical events): each kind's distinct
    values in order of appearance; kinds without a value are left out."""
    subjects: dict[str, list[str]] = {}
    for event in events:
        for kind, value in _event_values(event):
            if isinstance(value, str) and value.strip() and value not in subjects.get(kind, ()):
                subjects.setdefault(kind, []).append(value)
    return subjects


def subjects_merge(*many: dict | None) -> dict[str, list[str]]:
    """Several subject dicts (values a str or a list of str) as one, each kind's values distinct."""
    merged: dict[str, list[str]] = {}
    for subjects in many:
        for kind, values in (subjects or {}).items():
            for value in values if isinstance(values, list | tuple) else [values]:
                if isinstance(value, str) and value and value not in merged.get(kind, ()):
                    merged.setdefault(kind, []).append(value)
    return merged
