"""Keyed hashes (HMAC-SHA256 blind index) of identifiers that are searched but never stored in clear.

`blind_index(value, kind=...)` is deterministic for a given key, so equality search works: hash the
query, compare hashes. The kind is part of the hashed message (domain separation): the same string
as an email and as a customer id gives two unrelated hashes. Only the kind decides normalisation.

Rotation: `BLIND_INDEX_KEY` hashes everything written from now on; hashes written under earlier
keys stay as they are (audit rows are append-only and chained, they are never re-hashed) and stay
searchable while those keys are listed in `BLIND_INDEX_PREVIOUS_KEYS`.
"""

import hashlib
import hmac

from django.conf import settings

from config.exceptions import ApplicationError


class UnknownSubjectKind(ApplicationError):
    code = "unknown_subject_kind"


# Kinds of identifier the audit log indexes. A fixed list, so a search (which does not know the
# kind of its query) can try every kind; add a kind here before passing it as a subject.
SUBJECT_KINDS = frozenset(
    {
        "email",
        "customer",
        "user",
        "payment",  # the provider's payment id a payment and its refunds/disputes share
        "payment_intent",
        "charge",
        "invoice",
        "subscription",
        "checkout_session",
        "dispute",
        "provider_event",
        "endpoint",
        "dead_letter",
        "notification",
        # A support lookup's search term (`customer.looked_up`): "who looked up this customer" is
        # answerable by the term, and the lookup itself never seeds a story from its own trail.
        "lookup",
    }
)


def subject_normalise(value: str, *, kind: str) -> str:
    value = str(value).strip()
    if kind == "email" or (kind == "lookup" and "@" in value):
        # Providers and users disagree on case; mailbox names are case-insensitive in practice (and
        # a lookup by email finds the customer in any case, so its trail is found in any case too).
        return value.lower()
    return value


def _digest(key: str, value: str, kind: str) -> str:
    message = f"{kind}\x00{subject_normalise(value, kind=kind)}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def blind_index(value: str, *, kind: str) -> str:
    """HMAC-SHA256 of the normalised `value` under the current BLIND_INDEX_KEY, as 64 hex chars."""
    if kind not in SUBJECT_KINDS:
        raise UnknownSubjectKind(f"unknown subject kind {kind!r}; known: {', '.join(sorted(SUBJECT_KINDS))}")
    return _digest(settings.BLIND_INDEX_KEY, value, kind)


def blind_index_candidates(value: str, *, kinds=None) -> list[str]:
    """Every hash `value` may have been stored under: each kind, current and previous keys."""
    keys = [settings.BLIND_INDEX_KEY, *getattr(settings, "BLIND_INDEX_PREVIOUS_KEYS", [])]
    kinds = sorted(kinds or SUBJECT_KINDS)
    return [_digest(key, value, kind) for key in keys if key for kind in kinds]
