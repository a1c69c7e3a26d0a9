"""A customer's whole story for support, from one search term, in a bounded number of queries.

The term (an email, a provider customer id, a payment id, a user id) is never stored or compared in
clear against the audit log: it is hashed under every subject kind and blind-index key, and those
hashes are looked up in `AuditSubject` (its `value_hash` index), newest entries first, capped. From
the entries found, ONE hop: the other buyer identifiers they carry (customer, user, payment,
subscription, email hashes) find the entries that carry those, so a refund that names only the
payment joins the story of the buyer found by email. The domain rows (customers, entitlements,
refunds, subscriptions, notifications, stored events, dead letters) are then read by ids and indexed
columns only. Every query is index-driven and LIMITed; the number of queries does not depend on the
length of the story (docs/support.md).

The result holds ids, types, statuses, reasons and times, never personal data: no email, name or
address, no free-text error message, no notification subject or body, no username.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q

from audit.models import AuditEntry, AuditSubject
from config.blind_index import SUBJECT_KINDS, blind_index_candidates
from config.display import (
    SEARCH_TERM_MAX_LENGTH,
    id_display,
    is_placeholder,
    search_term_problem,
    source_display,
)
from fulfillment.models import Customer, Entitlement, PaymentRevocation, Subscription
from notifications.models import Notification
from providers import SCHEMES
from support.exceptions import InvalidLookupQuery
from webhooks.models import DeadLetter, WebhookEvent

MAX_QUERY_LENGTH = SEARCH_TERM_MAX_LENGTH
# The subject kind a lookup's own audit entry stores its term under: never a seed of a story.
LOOKUP_KIND = "lookup"
# Kinds of identifier that name a buyer (or their payment): the hop follows these, never an endpoint,
# a notification or a dead letter, which would pull in other customers' stories.
BUYER_KINDS = ("customer", "user", "payment", "payment_intent", "subscription", "email")
# Caps: a lookup reads at most this much, however long the story (the answer says when it was cut).
SEED_ENTRIES_MAX = 500
HOP_HASHES_MAX = 50
HOP_ENTRIES_MAX = 500
EVENT_ENTRIES_MAX = 500
CUSTOMERS_MAX = 50
ENTITLEMENTS_MAX = 200
SUBSCRIPTIONS_MAX = 50
NOTIFICATIONS_MAX = 200
EVENTS_MAX = 500
DEAD_LETTERS_MAX = 100
LIMIT_MAX = 500

DROPPED = "[dropped]"  # what audit/redaction.py leaves of a value that did not have its kind's shape
_ENTRY_FIELDS = ("id", "action", "occurred_at", "actor", "event_id", "data")
_EVENT_FIELDS = (
    "id", "endpoint__slug", "event_type", "status", "received_at", "provider_created_at", "processed_at", "attempts",
)


@dataclass
class TimelineLinks:
    event: str | None = None
    audit_entry: int | None = None
    entitlement: int | None = None
    notification: str | None = None
    dead_letter: int | None = None


@dataclass
class TimelineItem:
    at: datetime
    kind: str  # event, audit, entitlement, notification, dead_letter, refund
    title: str
    status: str = ""
    reason: str = ""
    detail: dict = field(default_factory=dict)
    links: TimelineLinks = field(default_factory=TimelineLinks)


@dataclass
class EntitlementSummary:
    id: int
    key: str
    status: str
    active: bool
    source: str
    payment: str
    customer: str | None
    user: int | None
    granted_at: datetime | None
    revoked_at: datetime | None
    revoke_reason: str
    expires_at: datetime | None


@dataclass
class CustomerTimeline:
    query: str
    matched_kinds: list[str]
    user_ids: list[int]
    customer_ids: list[str]  # provider customer ids
    payment_ids: list[str]
    subscription_ids: list[str]
    entitlements: list[EntitlementSummary]
    counts: dict[str, int]
    items: list[TimelineItem]
    capped: list[str]  # which reads hit their cap: the story may be longer than shown
    truncated: bool  # the timeline was cut to `limit` items

    @property
    def found(self) -> bool:
        return bool(self.items or self.entitlements)

    @property
    def active_entitlements(self) -> int:
        return sum(1 for row in self.entitlements if row.active)


def lookup_query_clean(q: str | None) -> str:
    """The search term, stripped of spaces; InvalidLookupQuery when blank, too long or holding a
    control, format or separator character (checked before stripping: a trailing newline is refused)."""
    problem = search_term_problem(q, max_length=MAX_QUERY_LENGTH)
    if problem:
        raise InvalidLookupQuery(problem)
    term = (q or "").strip()
    if not term:
        raise InvalidLookupQuery("pass ?q=<email, provider customer id or payment id>")
    return term


def _hashes_by_kind(term: str) -> dict[str, str]:
    """Every hash the term may be stored under (each kind, each key) -> its kind."""
    kinds = sorted((set(SUBJECT_KINDS) | set(BUYER_KINDS)) - {LOOKUP_KIND})
    return {digest: kind for kind in kinds for digest in blind_index_candidates(term, kinds=[kind])}


def _entry_ids_by_hashes(hashes, *, cap: int) -> tuple[list[tuple[int, str]], bool]:
    """(entry id, hash) of the newest entries carrying any of `hashes`: the value_hash index, LIMITed."""
    rows = list(
        AuditSubject.objects.filter(value_hash__in=list(hashes)).order_by("-entry_id").values_list("entry_id", "value_hash")[: cap + 1]
    )
    return rows[:cap], len(rows) > cap


def _ids_from_entry_data(entries: list[AuditEntry]) -> tuple[set[str], set[str], set[int]]:
    """Payment ids, subscription ids and customer row ids that entries name in their (redacted) data."""
    payments, subscriptions, customers = set(), set(), set()
    for entry in entries:
        data = entry.data if isinstance(entry.data, dict) else {}
        # The redactor's `[dropped]` (a value without an id's shape, e.g. an email) is no id.
        if isinstance(data.get("payment_intent"), str) and data["payment_intent"] and not is_placeholder(data["payment_intent"]):
            payments.add(data["payment_intent"])
        for key in ("source", "entitlement_source"):
            source = data.get(key)
            if not isinstance(source, str) or is_placeholder(source):
                continue
            if source.startswith("subscription:"):
                subscriptions.add(source.removeprefix("subscription:"))
            elif source.startswith("payment:"):
                payments.add(source.removeprefix("payment:"))
        if isinstance(data.get("customer_id"), int):
            customers.add(data["customer_id"])
    return payments, subscriptions, customers


def _source_ids(source: str) -> tuple[str | None, str | None]:
    """(payment id, subscription id) an entitlement source names."""
    if source.startswith("subscription:"):
        return None, source.removeprefix("subscription:")
    if source.startswith("payment:"):
        return source.removeprefix("payment:"), None
    return None, None


def customer_timeline(*, q: str, limit: int = 200) -> CustomerTimeline:
    """One customer's story for `q`, newest first (see the module docstring)."""
    term = lookup_query_clean(q)
    limit = max(1, min(int(limit), LIMIT_MAX))
    capped: list[str] = []

    # a. The term's hashes -> the newest entries that carry them.
    hash_kinds = _hashes_by_kind(term)
    seed, seed_capped = _entry_ids_by_hashes(hash_kinds, cap=SEED_ENTRIES_MAX)
    if seed_capped:
        capped.append("audit_entries")
    matched_kinds = {hash_kinds[digest] for _, digest in seed}
    entry_ids = {entry_id for entry_id, _ in seed}

    # b. One hop: the other buyer identifiers those entries carry -> the entries carrying them.
    if entry_ids:
        hop_hashes = list(
            AuditSubject.objects.filter(entry_id__in=entry_ids, kind__in=BUYER_KINDS)
            .exclude(value_hash__in=list(hash_kinds))
            .order_by("value_hash")
            .values_list("value_hash", flat=True)
            .distinct()[: HOP_HASHES_MAX + 1]
        )
        if len(hop_hashes) > HOP_HASHES_MAX:
            capped.append("identifiers")
            hop_hashes = hop_hashes[:HOP_HASHES_MAX]
        if hop_hashes:
            hop, hop_capped = _entry_ids_by_hashes(hop_hashes, cap=HOP_ENTRIES_MAX)
            if hop_capped:
                capped.append("related_audit_entries")
            entry_ids |= {entry_id for entry_id, _ in hop}
    entries = list(AuditEntry.objects.filter(id__in=entry_ids).only(*_ENTRY_FIELDS)) if entry_ids else []
    event_ids = {entry.event_id for entry in entries if entry.event_id}
    payments, subscriptions, customer_pks = _ids_from_entry_data(entries)

    # c. The customers: by the email's hash (as Customer.email_hash is computed: the email kind, any
    # key), the provider customer id, a user id, what the entries named, and whose payment `q` is.
    email_hashes = [digest for digest, kind in hash_kinds.items() if kind == "email"]
    payment_terms = payments | {term}
    customer_filter = (
        Q(email_hash__in=email_hashes)
        | Q(provider_customer_id=term)
        | Q(pk__in=customer_pks)
        | Q(pk__in=Entitlement.objects.filter(payment_intent__in=payment_terms).order_by().values("customer_id")[:CUSTOMERS_MAX])
    )
    # A user id as written (`6`, not `06`): a term found as a user must show as matched `user`.
    if term.isdigit() and len(term) < 19 and str(int(term)) == term:
        customer_filter |= Q(user_id=int(term))
    customers = list(
        Customer.objects.filter(customer_filter).only("id", "provider", "provider_customer_id", "user_id", "email_hash")[: CUSTOMERS_MAX + 1]
    )
    user_ids = {customer.user_id for customer in customers if customer.user_id}
    if user_ids:
        # The same person's other customer records (another provider, a guest checkout since linked).
        known = {customer.pk for customer in customers}
        customers += [
            customer
            for customer in Customer.objects.filter(user_id__in=user_ids)
            .only("id", "provider", "provider_customer_id", "user_id", "email_hash")[: CUSTOMERS_MAX + 1]
            if customer.pk not in known
        ]
    if len(customers) > CUSTOMERS_MAX:
        capped.append("customers")
        customers = customers[:CUSTOMERS_MAX]
    for customer in customers:
        if customer.email_hash and customer.email_hash in email_hashes:
            matched_kinds.add("email")
        if customer.provider_customer_id == term:
            matched_kinds.add("customer")
        if customer.user_id is not None and str(customer.user_id) == term:
            matched_kinds.add("user")
    customers_by_pk = {customer.pk: customer for customer in customers}

    # Entitlements of those customers, and whatever the payments found granted.
    entitlements = list(
        Entitlement.objects.filter(Q(customer_id__in=list(customers_by_pk)) | Q(payment_intent__in=payment_terms))
        .order_by("-state_at", "-id")[: ENTITLEMENTS_MAX + 1]
    )
    if len(entitlements) > ENTITLEMENTS_MAX:
        capped.append("entitlements")
        entitlements = entitlements[:ENTITLEMENTS_MAX]
    for row in entitlements:
        if row.payment_intent == term:
            matched_kinds.add("payment")
        if row.payment_intent:
            payments.add(row.payment_intent)
        payment, subscription = _source_ids(row.source)
        payments |= {payment} if payment else set()
        subscriptions |= {subscription} if subscription else set()
        if row.last_event_id:
            event_ids.add(row.last_event_id)
    missing = {row.customer_id for row in entitlements} - set(customers_by_pk)
    if missing:
        for customer in Customer.objects.filter(pk__in=missing).only("id", "provider", "provider_customer_id", "user_id"):
            customers_by_pk[customer.pk] = customer
            if customer.user_id:
                user_ids.add(customer.user_id)

    revocations = list(
        PaymentRevocation.objects.filter(provider__in=list(SCHEMES), payment_intent__in=payments | {term})
        .order_by("-occurred_at")[:ENTITLEMENTS_MAX]
    )
    if any(row.payment_intent == term for row in revocations):
        matched_kinds.add("payment")
    subscription_rows = list(
        Subscription.objects.filter(customer_id__in=list(customers_by_pk))
        .only("subscription_id", "status", "state_at")
        .order_by("-state_at")[:SUBSCRIPTIONS_MAX]
    )
    subscriptions |= {row.subscription_id for row in subscription_rows}

    notifications = list(
        Notification.objects.filter(Q(event_id__in=list(event_ids)) | Q(user_id__in=list(user_ids)))
        .only("id", "event_id", "user_id", "channel", "template", "category", "status", "reason", "error_type", "created_at", "sent_at")
        .order_by("-created_at")[: NOTIFICATIONS_MAX + 1]
    )
    if len(notifications) > NOTIFICATIONS_MAX:
        capped.append("notifications")
        notifications = notifications[:NOTIFICATIONS_MAX]
    event_ids |= {row.event_id for row in notifications}

    # The stored events (never their bodies), their dead letters and the entries of those events the
    # subjects did not find (e.g. `webhook.received` written before it carried the buyer's ids).
    ordered_event_ids = sorted(event_ids, key=str, reverse=True)[:EVENTS_MAX]  # uuid7: newest first
    if len(event_ids) > EVENTS_MAX:
        capped.append("events")
    events = list(WebhookEvent.objects.filter(id__in=ordered_event_ids).select_related("endpoint").only(*_EVENT_FIELDS))
    dead_letters = list(
        DeadLetter.objects.filter(event_id__in=ordered_event_ids)
        .only("id", "event_id", "task_name", "error_type", "status", "attempts", "occurrences", "first_failed_at", "last_failed_at")
        .order_by("-last_failed_at")[:DEAD_LETTERS_MAX]
    )
    if ordered_event_ids:
        more = list(
            AuditEntry.objects.filter(event_id__in=ordered_event_ids)
            .exclude(id__in=list(entry_ids))
            .only(*_ENTRY_FIELDS)
            .order_by("-id")[: EVENT_ENTRIES_MAX + 1]
        )
        if len(more) > EVENT_ENTRIES_MAX:
            capped.append("event_audit_entries")
        entries += more[:EVENT_ENTRIES_MAX]

    items = _timeline_items(
        entries=entries, events=events, dead_letters=dead_letters, entitlements=entitlements,
        customers_by_pk=customers_by_pk, notifications=notifications, revocations=revocations,
    )
    items.sort(key=lambda item: (item.at, _KIND_ORDER.get(item.kind, 0)), reverse=True)
    summaries = [_entitlement_summary(row, customers_by_pk.get(row.customer_id)) for row in entitlements]
    counts = {
        "events": len(events),
        "audit_entries": len(entries),
        "entitlements": len(entitlements),
        "active_entitlements": sum(1 for row in summaries if row.active),
        "notifications": len(notifications),
        "notifications_suppressed": sum(1 for row in notifications if row.status == Notification.Status.SUPPRESSED),
        "dead_letters": len(dead_letters),
        "refunds": len(revocations),
    }
    return CustomerTimeline(
        query=term,
        matched_kinds=sorted(matched_kinds),
        user_ids=sorted(user_ids),
        customer_ids=_ids_display({c.provider_customer_id for c in customers_by_pk.values() if c.provider_customer_id}),
        payment_ids=_ids_display(payments | ({term} if "payment" in matched_kinds else set())),
        subscription_ids=_ids_display(subscriptions),
        entitlements=summaries,
        counts=counts,
        items=items[:limit],
        capped=capped,
        truncated=len(items) > limit,
    )


# Among items at the same instant, the cause first when read newest-first: the event, then its effects.
_KIND_ORDER = {"event": 0, "refund": 1, "entitlement": 2, "notification": 3, "dead_letter": 4, "audit": 5}


def _ids_display(values) -> list[str]:
    """Ids as shown (config.display.id_display), never a redactor's placeholder, sorted, distinct."""
    return sorted({id_display(value) for value in values if value and not is_placeholder(value)})


def _entitlement_summary(row: Entitlement, customer: Customer | None) -> EntitlementSummary:
    return EntitlementSummary(
        id=row.pk, key=row.key, status=row.status, active=row.is_active, source=source_display(row.source),
        payment=id_display(row.payment_intent) if row.payment_intent else row.payment_intent,
        customer=id_display(customer.provider_customer_id) if customer else None, user=customer.user_id if customer else None,
        granted_at=row.granted_at, revoked_at=row.revoked_at, revoke_reason=row.revoke_reason, expires_at=row.expires_at,
    )


_CHANGE_ACTIONS = ("entitlement.granted", "entitlement.revoked", "entitlement.blocked")


def _entitlement_changes(entries) -> dict[tuple, list]:
    """The entitlement entries read, by (action, entitlement id) and (action, key, source), oldest first.

    A provider's entry names the row by key and source (unique with the customer); an operator's
    by its id as well.
    """
    changes: dict[tuple, list] = {}
    for entry in sorted(entries, key=lambda entry: entry.id):
        data = entry.data if isinstance(entry.data, dict) else {}
        if entry.action not in _CHANGE_ACTIONS:
            continue
        if isinstance(data.get("entitlement_id"), int):
            changes.setdefault((entry.action, data["entitlement_id"]), []).append(entry)
        source = data.get("entitlement_source") or data.get("source")
        if isinstance(data.get("entitlement"), str) and isinstance(source, str) and not is_placeholder(source):
            changes.setdefault((entry.action, data["entitlement"], source), []).append(entry)
    return changes


def _first(changes, row: Entitlement, actions, *, newest: bool):
    found = [entry for action in actions for key in ((action, row.pk), (action, row.key, row.source)) for entry in changes.get(key, [])]
    if not found:
        return None
    return max(found, key=lambda entry: entry.id) if newest else min(found, key=lambda entry: entry.id)


def _change_links(row: Entitlement, entry, *, fallback) -> TimelineLinks:
    if entry is None:
        return TimelineLinks(entitlement=row.pk, event=str(fallback) if fallback else None)
    event = entry.event_id
    if entry.action == "entitlement.blocked":
        # Its entry is written by the late grant; the event that revoked first is `blocking_event`.
        blocking = entry.data.get("blocking_event") if isinstance(entry.data, dict) else None
        event = blocking if isinstance(blocking, str) and not is_placeholder(blocking) else fallback
    return TimelineLinks(entitlement=row.pk, audit_entry=entry.id, event=str(event) if event else None)


def _timeline_items(*, entries, events, dead_letters, entitlements, customers_by_pk, notifications, revocations) -> list[TimelineItem]:
    items: list[TimelineItem] = []
    for event in events:
        items.append(TimelineItem(
            at=event.received_at, kind="event", title=event.event_type or "(no type)", status=event.status,
            detail={
                "endpoint": event.endpoint.slug, "provider_time": event.provider_created_at,
                "processed_at": event.processed_at, "attempts": event.attempts,
            },
            links=TimelineLinks(event=str(event.id)),
        ))
    for entry in entries:
        data = entry.data if isinstance(entry.data, dict) else {}
        reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
        reason = "" if reason == DROPPED else reason  # an empty reason does not pass the redactor's label shape
        items.append(TimelineItem(
            at=entry.occurred_at, kind="audit", title=entry.action, reason=reason,
            detail={"actor": entry.actor, "data": data},
            links=TimelineLinks(audit_entry=entry.id, event=str(entry.event_id) if entry.event_id else None),
        ))
    changes = _entitlement_changes(entries)
    for row in entitlements:
        customer = customers_by_pk.get(row.customer_id)
        detail = {
            "key": row.key, "source": source_display(row.source), "payment": id_display(row.payment_intent or None),
            "expires_at": row.expires_at,
            "customer": id_display(customer.provider_customer_id) if customer else None, "user": customer.user_id if customer else None,
        }
        if row.granted_at:
            # The event that granted it (its first `entitlement.granted` entry), never `last_event_id`,
            # which a refund has since moved to itself; left out when no entry names it.
            granted = _first(changes, row, ("entitlement.granted",), newest=False)
            items.append(TimelineItem(
                at=row.granted_at, kind="entitlement", title=f"{row.key} granted", status="granted", detail=detail,
                links=_change_links(row, granted, fallback=None),
            ))
        if row.status == Entitlement.Status.REVOKED and row.revoked_at:
            title = f"{row.key} revoked" if row.granted_at else f"{row.key} grant blocked"
            revoked = _first(changes, row, ("entitlement.revoked", "entitlement.blocked"), newest=True)
            items.append(TimelineItem(
                at=row.revoked_at, kind="entitlement", title=title, status="revoked" if row.granted_at else "blocked",
                reason=row.revoke_reason, detail=detail,
                # A provider revocation sets `last_event_id` to its event: the fallback when no entry was read.
                links=_change_links(row, revoked, fallback=row.last_event_id),
            ))
    for row in notifications:
        items.append(TimelineItem(
            at=row.sent_at or row.created_at, kind="notification", title=f"{row.template} ({row.channel})", status=row.status,
            reason=row.reason or row.error_type,
            detail={"channel": row.channel, "template": row.template, "category": row.category, "user": row.user_id},
            links=TimelineLinks(notification=str(row.id), event=str(row.event_id)),
        ))
    for row in dead_letters:
        # The error's class and the task, never its message: scrubbed, but still free text.
        items.append(TimelineItem(
            at=row.last_failed_at, kind="dead_letter", title=row.task_name.rsplit(".", 1)[-1], status=row.status,
            reason=row.error_type,
            detail={"task": row.task_name, "attempts": row.attempts, "occurrences": row.occurrences, "first_failed_at": row.first_failed_at},
            links=TimelineLinks(dead_letter=row.pk, event=str(row.event_id) if row.event_id else None),
        ))
    for row in revocations:
        items.append(TimelineItem(
            at=row.occurred_at, kind="refund", title=f"payment {row.reason}", status=row.reason, reason=row.reason,
            detail={"payment": id_display(row.payment_intent), "provider": row.provider},
        ))
    return items
