"""What fulfilment reads but never writes while it runs: the catalog, users and their notification
preferences.

The handlers (fulfillment/services.py) ask a `FulfilmentReads` for these rows instead of querying
them, so the one-by-one path and the set-based path run the same rule code. `FulfilmentReads` reads
each row when asked (one event); `BatchReads` reads the rows of a whole batch of canonical events
up front, one query per kind, and falls back to the per-row read for anything it did not prefetch.

Only rows that fulfilment does not change belong here. Customers, entitlements, revocations and
subscription states are written by earlier events of the same batch, so the handlers keep reading
them from the database (under their row locks) where a later event sees what an earlier one did.
"""

from collections import defaultdict

from django.contrib.auth import get_user_model
from django.db.models.functions import Upper

from config import encryption
from fulfillment.models import Product
from notifications.services import notification_preferences_effective_many


class FulfilmentReads:
    """One query per question: what a single event needs."""

    def products(self, *, provider: str, price_ids: list[str]) -> dict[str, Product]:
        return {p.price_id: p for p in Product.objects.filter(provider=provider, price_id__in=price_ids)}

    def user_by_id(self, user_id: int):
        return get_user_model().objects.filter(pk=user_id).first()

    def user_by_email(self, email: str):
        return get_user_model().objects.filter(email__iexact=email).order_by("pk").first()

    def preferences(self, user_id: int) -> dict[str, dict[str, bool]] | None:
        """None: the notification service reads them itself."""
        return None


def _buyers(canonical_events: list[dict]):
    for canonical in canonical_events:
        buyer = canonical.get("data", {}).get("buyer")
        if isinstance(buyer, dict):
            yield buyer


class BatchReads(FulfilmentReads):
    """The reads of a batch of canonical events, prefetched: one query per kind for the batch."""

    def __init__(self, *, provider_events: list[tuple[str, list[dict]]]) -> None:
        User = get_user_model()
        price_ids: dict[str, set[str]] = defaultdict(set)
        user_ids: set[int] = set()
        emails: set[str] = set()
        for provider, canonical_events in provider_events:
            for canonical in canonical_events:
                price_ids[provider].update(canonical.get("data", {}).get("price_ids") or ())
            for buyer in _buyers(canonical_events):
                if buyer.get("user_id") and str(buyer["user_id"]).isdigit():
                    user_ids.add(int(buyer["user_id"]))
                if buyer.get("email_encrypted"):
                    emails.add(encryption.decrypt(buyer["email_encrypted"].encode()).decode())
        self._products: dict[str, dict[str, Product]] = {}
        for provider, ids in price_ids.items():
            self._products[provider] = super().products(provider=provider, price_ids=sorted(ids))
        self._users_by_id = User.objects.in_bulk(sorted(user_ids)) if user_ids else {}
        # Case-insensitive e-mail match as `email__iexact` does it. The mapping back is done here in
        # Python, which agrees with PostgreSQL's UPPER() on ASCII only: other addresses are read one
        # by one (user_by_email falls back), so no buyer is matched differently from the single path.
        ascii_emails = sorted(e for e in emails if e.isascii())
        self._users_by_email: dict[str, object] = {}
        self._emails_known = {e.upper() for e in ascii_emails}
        if ascii_emails:
            found = (
                User.objects.annotate(email_upper=Upper("email"))
                .filter(email_upper__in=sorted(self._emails_known))
                .order_by("pk")
            )
            for user in found:
                if not user.email.isascii():  # PostgreSQL matched it where Python may not: ask one by one
                    self._emails_known.discard(user.email_upper)
                    continue
                self._users_by_email.setdefault(user.email.upper(), user)
        everyone = {u.pk for u in self._users_by_id.values()} | {u.pk for u in self._users_by_email.values()}
        self._preferences = notification_preferences_effective_many(user_ids=sorted(everyone)) if everyone else {}

    def products(self, *, provider: str, price_ids: list[str]) -> dict[str, Product]:
        known = self._products.get(provider, {})
        if not all(price_id in known for price_id in price_ids):
            return super().products(provider=provider, price_ids=price_ids)
        return {price_id: known[price_id] for price_id in price_ids}

    def user_by_id(self, user_id: int):
        if user_id in self._users_by_id:
            return self._users_by_id[user_id]
        return super().user_by_id(user_id)

    def user_by_email(self, email: str):
        if email.isascii() and email.upper() in self._emails_known:
            return self._users_by_email.get(email.upper())
        return super().user_by_email(email)

    def preferences(self, user_id: int) -> dict[str, dict[str, bool]] | None:
        return self._preferences.get(user_id)
