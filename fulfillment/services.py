"""Fulfilment: turn canonical events into entitlements and say who must be told.

Every effect is idempotent through a unique row (customer, key, source) and ordered by the
provider's event time (`state_at`) under one rule, `fulfillment.ordering.fact_supersedes`, so
redelivery, replay and out-of-order arrival converge on the state the provider's latest facts imply.
Called inside the event-processing transaction.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.redaction import redact_text
from audit.services import audit_entry_append
from canonical.facts import email_hash
from canonical.subjects import canonical_subjects, subjects_merge
from config import encryption, metrics
from config.db import rows_insert_new
from config.unit_of_work import UnitOfWork
from fulfillment.exceptions import CatalogInvalid, PriceNotFound, PriceNotInCatalog
from fulfillment.models import Customer, Entitlement, PaymentRevocation, Product, Subscription
from fulfillment.ordering import fact_supersedes
from fulfillment.reads import FulfilmentReads
from notifications.services import notification_send

logger = logging.getLogger(__name__)

ENDED = {"canceled", "unpaid", "incomplete_expired", "paused"}


# --- Catalog ----------------------------------------------------------------------------------------


@dataclass
class CatalogImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@transaction.atomic
def catalog_import(*, data: object, actor: str = "system", source: str = "import_catalog") -> CatalogImportResult:
    """Upsert products from `{"products": [{"provider", "price_id", "entitlements", "name"?}]}`.

    Through the product services, so every created or changed product is audited.
    """
    products = data.get("products") if isinstance(data, dict) else None
    if not isinstance(products, list):
        raise CatalogInvalid('the catalog needs a "products" list')
    result = CatalogImportResult()
    for index, item in enumerate(products):
        if not isinstance(item, dict):
            raise CatalogInvalid(f"product #{index} is not an object")
        price_id, keys = item.get("price_id"), item.get("entitlements")
        if not isinstance(price_id, str) or not price_id.strip():
            raise CatalogInvalid(f"product #{index} has no price_id")
        keys = _entitlement_keys_clean(keys, label=f"product #{index} ({price_id})")
        provider, price_id = item.get("provider") or "stripe", price_id.strip()
        product = Product.objects.select_for_update().filter(provider=provider, price_id=price_id).first()
        if product is None:
            product_create(
                provider=provider, price_id=price_id, entitlements=keys, name=item.get("name") or "", actor=actor, source=source
            )
            result.created += 1
        elif product_update(product=product, entitlements=keys, name=item.get("name"), actor=actor, source=source):
            result.updated += 1
        else:
            result.unchanged += 1
    return result


def _entitlement_keys_clean(keys: object, *, label: str) -> list[str]:
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k.strip() for k in keys):
        raise CatalogInvalid(f"{label} needs a non-empty list of entitlement keys")
    return sorted({key.strip() for key in keys})


def _note_audited(note: str) -> dict:
    # An operator's note is free text: scrubbed of personal data and secrets before it is appended
    # (the audit redactor scrubs `data` again).
    note = (note or "").strip()
    return {"note": redact_text(note)} if note else {}


def _product_audit(
    action: str, *, product: Product, product_id: int, actor: str, source: str, note: str,
    before: list[str] | None, after: list[str] | None, fields: list[str] | None = None,
) -> None:
    data = {
        "product_id": product_id, "provider": product.provider, "price_id": product.price_id,
        "entitlements_before": before, "entitlements_after": after, "source": source,
    }
    if fields is not None:
        data["fields"] = fields
    audit_entry_append(action=action, actor=actor, data={**data, **_note_audited(note)})


@transaction.atomic
def product_create(
    *, provider: str, price_id: str, entitlements: list[str], name: str = "", actor: str, source: str, note: str = ""
) -> Product:
    """Add a price to the catalog; audited as `product.created`."""
    keys = _entitlement_keys_clean(entitlements, label=f"product {price_id}")
    try:
        with transaction.atomic():
            product = Product.objects.create(provider=provider, price_id=price_id, entitlements=keys, name=name or "")
    except IntegrityError:
        raise CatalogInvalid(f"price {price_id} is already in the {provider} catalog") from None
    _product_audit(
        "product.created", product=product, product_id=product.pk, actor=actor, source=source, note=note,
        before=None, after=keys,
    )
    return product


@transaction.atomic
def product_update(
    *, product: Product, entitlements: list[str], name: str | None = None, actor: str, source: str, note: str = ""
) -> bool:
    """Set a product's entitlement keys (and name, unless None); audited as `product.changed` when
    anything changes. Returns whether it did. Existing entitlements are not touched: the keys
    apply to the payments processed from now on."""
    keys = _entitlement_keys_clean(entitlements, label=f"product {product.price_id}")
    row = Product.objects.select_for_update().get(pk=product.pk)
    before = list(row.entitlements)
    fields = []
    if before != keys:
        row.entitlements = keys
        fields.append("entitlements")
    if name is not None and row.name != name:
        row.name = name
        fields.append("name")
    if not fields:
        return False
    row.save(update_fields=[*fields, "updated_at"])
    _product_audit(
        "product.changed", product=row, product_id=row.pk, actor=actor, source=source, note=note,
        before=before, after=keys, fields=fields,
    )
    product.entitlements, product.name, product.updated_at = row.entitlements, row.name, row.updated_at
    return True


@transaction.atomic
def product_delete(*, product: Product, actor: str, source: str, note: str = "") -> None:
    """Remove a price from the catalog (later payments of it dead-letter); audited as `product.deleted`."""
    row = Product.objects.select_for_update().filter(pk=product.pk).first()
    if row is None:
        return
    product_id = row.pk
    row.delete()
    _product_audit(
        "product.deleted", product=row, product_id=product_id, actor=actor, source=source, note=note,
        before=list(row.entitlements), after=None,
    )


def _entitlement_keys(*, provider: str, price_ids: list[str], reads: FulfilmentReads) -> list[str]:
    if not price_ids:
        raise PriceNotFound("the event names no price (no line items, metadata price_id or subscription items)")
    products = reads.products(provider=provider, price_ids=price_ids)
    missing = [price for price in price_ids if price not in products]
    if missing:
        raise PriceNotInCatalog(f"price {', '.join(missing)} is not in the catalog", extra={"price_ids": missing})
    return sorted({key for product in products.values() for key in product.entitlements})


# --- Buyers -------------------------------------------------------------------------------------------


def _email(buyer: dict) -> str | None:
    token = buyer.get("email_encrypted")
    return encryption.decrypt(token.encode()).decode() if token else None


def _user_find(buyer: dict, reads: FulfilmentReads):
    user_id = buyer.get("user_id")
    if user_id and str(user_id).isdigit():
        user = reads.user_by_id(int(user_id))
        if user is not None:
            return user
    email = _email(buyer)
    if email:
        return reads.user_by_email(email)
    return None


def customer_resolve(
    *, provider: str, buyer: dict, event_id=None, uow: UnitOfWork | None = None, reads: FulfilmentReads | None = None
) -> Customer:
    """The customer record of a buyer, created once; linked to a user as soon as one is known.

    Linking an existing guest customer to a user moves its entitlements: audited as
    `customer.linked` (actor system, source event) with the event that revealed the user.
    """
    key = buyer.get("provider_customer_id") or (f"email:{buyer['email_hash']}" if buyer.get("email_hash") else None)
    user = _user_find(buyer, reads or FulfilmentReads())
    if key is None:
        key = f"user:{user.pk}" if user is not None else None
    if key is None:
        raise PriceNotFound("the event identifies no buyer (no customer, user or email)")
    rows_insert_new(
        [
            Customer(
                provider=provider,
                key=key,
                provider_customer_id=buyer.get("provider_customer_id"),
                user=user,
                email_hash=buyer.get("email_hash") or "",
                email_encrypted=buyer["email_encrypted"].encode() if buyer.get("email_encrypted") else None,
            )
        ],
        conflict_fields=("provider", "key"),
    )
    customer = Customer.objects.select_for_update(of=("self",)).select_related("user").get(provider=provider, key=key)
    changed = []
    if customer.user_id is None and user is not None:
        customer.user = user
        changed.append("user")
    if not customer.email_hash and buyer.get("email_hash"):
        customer.email_hash = buyer["email_hash"]
        customer.email_encrypted = buyer["email_encrypted"].encode()
        changed += ["email_hash", "email_encrypted"]
    if changed:
        customer.save(update_fields=changed)
    if "user" in changed:
        audit_entry_append(
            action="customer.linked",
            event_id=event_id,
            data={"customer_id": customer.pk, "from_user": None, "to_user": user.pk, "source": "event"},
            subjects=_subjects(customer),
            dedup_key=f"customer.linked:{customer.pk}:{event_id}" if event_id else None,
            uow=uow,
        )
    return customer


@transaction.atomic
def customer_user_link(*, customer: Customer, user, actor: str, note: str = "", source: str = "admin") -> bool:
    """Link `customer` (and so its entitlements) to `user`, or unlink it with `user=None`.

    Audited as `customer.linked` with the user ids before and after. Returns False (and writes
    nothing) when the customer is already linked that way.
    """
    row = Customer.objects.select_for_update(of=("self",)).get(pk=customer.pk)
    from_user, to_user = row.user_id, (user.pk if user is not None else None)
    if from_user == to_user:
        return False
    row.user = user
    row.save(update_fields=["user"])
    customer.user = user
    subjects = _subjects(row)
    if to_user is None:
        subjects["user"] = str(from_user)  # an unlink is found under the user who lost the customer
    audit_entry_append(
        action="customer.linked",
        actor=actor,
        data={"customer_id": row.pk, "from_user": from_user, "to_user": to_user, "source": source, **_note_audited(note)},
        subjects=subjects,
    )
    return True


@transaction.atomic
def customers_link_user(*, user) -> int:
    """Move entitlements held by customers without a user to `user`, matched by email hash."""
    if not user.email:
        return 0
    customers = Customer.objects.select_for_update().filter(user__isnull=True, email_hash=email_hash(user.email)).order_by("pk")
    return sum(customer_user_link(customer=customer, user=user, actor="system", source="email_match") for customer in customers)


# --- Entitlements ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrantBlock:
    """Why a grant must land revoked, and the stored event that revoked it first (None: unknown)."""

    reason: str
    event_id: object = None


@dataclass
class FulfilmentOutcome:
    granted: list[Entitlement] = field(default_factory=list)
    revoked: list[Entitlement] = field(default_factory=list)
    # Grants that landed revoked because a refund, dispute or subscription end came first.
    blocked: list[tuple[Entitlement, GrantBlock]] = field(default_factory=list)
    payment_failed: bool = False
    customer: Customer | None = None


def _payment_lock(*, provider: str, payment_intent: str) -> None:
    """Serialise a payment's grants with its refunds and disputes until the transaction ends.

    A grant reads the payment's revocation and then inserts its rows; a refund inserts the revocation
    and then revokes the payment's rows. Run at once in two transactions (two workers, or two batches
    of one worker's fulfilment in flight), neither sees the other's uncommitted rows and the grant
    would stay active. The one who waits here reads after the other's commit. PostgreSQL only: on
    SQLite writers are serialised by the database already.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"payhook.payment:{provider}:{payment_intent}"])


def _grant_block(*, provider: str, source: str, payment_intent: str, at: datetime) -> GrantBlock | None:
    """The refund/dispute or subscription end a grant at `at` does not supersede, if any."""
    if payment_intent:
        _payment_lock(provider=provider, payment_intent=payment_intent)
        revocation = PaymentRevocation.objects.filter(provider=provider, payment_intent=payment_intent).first()
        if revocation is not None and not fact_supersedes(
            current_at=revocation.occurred_at, current_ends=True, incoming_at=at
        ):
            return GrantBlock(reason=revocation.reason, event_id=revocation.event_id)
    if source.startswith("subscription:"):
        ended_at = Subscription.objects.filter(
            provider=provider, subscription_id=source.removeprefix("subscription:"), status__in=ENDED
        ).values_list("state_at", flat=True).first()
        if ended_at is not None and not fact_supersedes(current_at=ended_at, current_ends=True, incoming_at=at):
            return GrantBlock(reason="subscription_ended")
    return None


def _revoked_by_later_fact(*, provider: str, source: str, payment_intent: str, at: datetime) -> str:
    """Why a grant at `at` must stay revoked: a refund/dispute or subscription end it does not supersede."""
    block = _grant_block(provider=provider, source=source, payment_intent=payment_intent, at=at)
    return block.reason if block else ""


def entitlement_grant(
    *, customer: Customer, key: str, source: str, at: datetime, event_id, payment_intent: str = "", expires_at=None,
    blocked: str | None = None,
) -> tuple[Entitlement, bool]:
    """Grant `key` through `source` as of provider time `at`. Returns (row, became_active).

    `blocked` is the reason a later fact already revoked this grant (computed when not given).
    """
    if blocked is None:
        blocked = _revoked_by_later_fact(provider=customer.provider, source=source, payment_intent=payment_intent, at=at)
    status = Entitlement.Status.REVOKED if blocked else Entitlement.Status.ACTIVE
    row = Entitlement(
        customer=customer, key=key, source=source, status=status, state_at=at, payment_intent=payment_intent,
        expires_at=expires_at, granted_at=at if not blocked else None, revoked_at=at if blocked else None,
        revoke_reason=blocked, last_event_id=event_id,
    )
    inserted = rows_insert_new([row], conflict_fields=("customer", "key", "source"))
    if inserted:
        row.pk = inserted.pop()
        return row, status == Entitlement.Status.ACTIVE
    row = Entitlement.objects.select_for_update().get(customer=customer, key=key, source=source)
    if not fact_supersedes(
        current_at=row.state_at, current_ends=row.status == Entitlement.Status.REVOKED,
        incoming_at=at, incoming_ends=bool(blocked),
    ):
        return row, False
    was_active = row.status == Entitlement.Status.ACTIVE
    row.status, row.state_at, row.last_event_id = status, at, event_id
    row.payment_intent = payment_intent or row.payment_intent
    row.expires_at = expires_at if expires_at is not None else row.expires_at
    if status == Entitlement.Status.ACTIVE:
        row.granted_at = row.granted_at or at
        row.revoked_at, row.revoke_reason = None, ""
    else:
        row.revoked_at, row.revoke_reason = at, blocked
    row.save()
    return row, status == Entitlement.Status.ACTIVE and not was_active


def _revoke_rows(rows, *, at: datetime, reason: str, event_id) -> list[Entitlement]:
    changed = []
    for row in rows:
        if not fact_supersedes(
            current_at=row.state_at, current_ends=row.status == Entitlement.Status.REVOKED, incoming_at=at, incoming_ends=True
        ):
            continue
        was_active = row.status == Entitlement.Status.ACTIVE
        row.status, row.state_at, row.revoked_at, row.revoke_reason, row.last_event_id = (
            Entitlement.Status.REVOKED, at, at, reason, event_id,
        )
        row.save()
        if was_active:
            changed.append(row)
    return changed


def _entitlement_operator_audit(action: str, *, row: Entitlement, actor: str, source: str, note: str, reason: str) -> None:
    audit_entry_append(
        action=action,
        actor=actor,
        data={
            "entitlement": row.key, "entitlement_id": row.pk, "customer_id": row.customer_id,
            "entitlement_source": row.source, "payment_intent": row.payment_intent,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None, "reason": reason,
            "source": source, **_note_audited(note),
        },
        subjects=_entitlement_subjects(row, customer_subjects=_subjects(row.customer), event_subjects={}),
    )


@transaction.atomic
def entitlement_revoke(*, entitlement: Entitlement, actor: str, note: str, source: str = "admin") -> bool:
    """An operator revokes an entitlement; audited as `entitlement.revoked`. False if already revoked.

    The revocation takes the current time as its `state_at`: provider facts older than it (a
    redelivery, a replay) do not grant it again; a newer fact (a renewal) does.
    """
    row = Entitlement.objects.select_for_update(of=("self",)).select_related("customer").get(pk=entitlement.pk)
    if row.status == Entitlement.Status.REVOKED:
        return False
    now = timezone.now()
    row.status, row.state_at, row.revoked_at, row.revoke_reason = Entitlement.Status.REVOKED, max(now, row.state_at), now, "operator"
    row.save()
    _entitlement_operator_audit("entitlement.revoked", row=row, actor=actor, source=source, note=note, reason="operator")
    return True


@transaction.atomic
def entitlement_restore(*, entitlement: Entitlement, actor: str, note: str, source: str = "admin") -> bool:
    """An operator grants a revoked entitlement again; audited as `entitlement.granted`. False if
    already active. Ordered like a revocation: a newer provider fact still wins."""
    row = Entitlement.objects.select_for_update(of=("self",)).select_related("customer").get(pk=entitlement.pk)
    if row.status == Entitlement.Status.ACTIVE:
        return False
    now = timezone.now()
    previous_reason = row.revoke_reason
    row.status, row.state_at = Entitlement.Status.ACTIVE, max(now, row.state_at)
    row.granted_at = row.granted_at or now
    row.revoked_at, row.revoke_reason = None, ""
    row.save()
    _entitlement_operator_audit(
        "entitlement.granted", row=row, actor=actor, source=source, note=note, reason=f"restored after {previous_reason or 'revocation'}"
    )
    return True


def _subscription_state_apply(*, provider: str, customer: Customer, data: dict, at: datetime) -> bool:
    """Record a subscription's state unless a newer one is known. Returns False for a stale fact."""
    period_end = parse_datetime(data["current_period_end"]) if data.get("current_period_end") else None
    row, created = Subscription.objects.select_for_update().get_or_create(
        provider=provider,
        subscription_id=data["subscription"],
        defaults={
            "customer": customer, "status": data["status"], "price_ids": data["price_ids"],
            "current_period_end": period_end, "state_at": at,
        },
    )
    if created:
        return True
    if not fact_supersedes(
        current_at=row.state_at, current_ends=row.status in ENDED, incoming_at=at, incoming_ends=data["status"] in ENDED
    ):
        return False
    row.status, row.state_at = data["status"], at
    row.price_ids = data["price_ids"] or row.price_ids
    row.current_period_end = period_end or row.current_period_end
    row.save()
    return True


def _fact_time(canonical: dict) -> datetime:
    return parse_datetime(canonical["time"])


def _payment_succeeded(*, provider, canonical, event_id, outcome, uow, reads):
    data, at = canonical["data"], _fact_time(canonical)
    customer = outcome.customer = customer_resolve(provider=provider, buyer=data["buyer"], event_id=event_id, uow=uow, reads=reads)
    keys = _entitlement_keys(provider=provider, price_ids=data["price_ids"], reads=reads)
    source = (
        f"subscription:{data['subscription']}" if data["subscription"] else f"payment:{data['payment_intent'] or data['source_object']}"
    )
    expires_at = parse_datetime(data["access_until"]) if data["access_until"] else None
    payment_intent = data["payment_intent"] or ""
    block = _grant_block(provider=provider, source=source, payment_intent=payment_intent, at=at)
    for key in keys:
        row, became_active = entitlement_grant(
            customer=customer, key=key, source=source, at=at, event_id=event_id,
            payment_intent=payment_intent, expires_at=expires_at, blocked=block.reason if block else "",
        )
        if became_active:
            outcome.granted.append(row)
        elif block is not None:
            outcome.blocked.append((row, block))


def _subscription_activated(*, provider, canonical, event_id, outcome, uow, reads):
    data, at = canonical["data"], _fact_time(canonical)
    customer = outcome.customer = customer_resolve(provider=provider, buyer=data["buyer"], event_id=event_id, uow=uow, reads=reads)
    keys = _entitlement_keys(provider=provider, price_ids=data["price_ids"], reads=reads)
    if not _subscription_state_apply(provider=provider, customer=customer, data=data, at=at):
        return
    source = f"subscription:{data['subscription']}"
    expires_at = parse_datetime(data["current_period_end"]) if data["current_period_end"] else None
    block = _grant_block(provider=provider, source=source, payment_intent="", at=at)
    for key in keys:
        row, became_active = entitlement_grant(
            customer=customer, key=key, source=source, at=at, event_id=event_id, expires_at=expires_at,
            blocked=block.reason if block else "",
        )
        if became_active:
            outcome.granted.append(row)
        elif block is not None:
            outcome.blocked.append((row, block))
    # A plan change: keys the subscription no longer carries are revoked.
    dropped = Entitlement.objects.select_for_update().filter(customer=customer, source=source).exclude(key__in=keys)
    outcome.revoked += _revoke_rows(dropped, at=at, reason="plan_changed", event_id=event_id)


def _subscription_canceled(*, provider, canonical, event_id, outcome, uow, reads):
    data, at = canonical["data"], _fact_time(canonical)
    customer = outcome.customer = customer_resolve(provider=provider, buyer=data["buyer"], event_id=event_id, uow=uow, reads=reads)
    if not _subscription_state_apply(provider=provider, customer=customer, data=data, at=at):
        return
    rows = Entitlement.objects.select_for_update().filter(source=f"subscription:{data['subscription']}")
    outcome.revoked += _revoke_rows(rows, at=at, reason="subscription_ended", event_id=event_id)


def _payment_revoked(*, provider, canonical, event_id, outcome, reason):
    data, at = canonical["data"], _fact_time(canonical)
    payment_intent = data.get("payment_intent")
    if not payment_intent:
        logger.info("revocation without payment_intent: nothing to match (event=%s)", event_id)
        return
    _payment_lock(provider=provider, payment_intent=payment_intent)
    PaymentRevocation.objects.get_or_create(
        provider=provider, payment_intent=payment_intent, defaults={"reason": reason, "occurred_at": at, "event_id": event_id}
    )
    rows = list(Entitlement.objects.select_for_update().select_related("customer").filter(
        customer__provider=provider, payment_intent=payment_intent
    ))
    if rows:
        outcome.customer = rows[0].customer
    outcome.revoked += _revoke_rows(rows, at=at, reason=reason, event_id=event_id)


def _payment_refunded(*, provider, canonical, event_id, outcome, uow, reads):
    if canonical["data"]["full"]:
        _payment_revoked(provider=provider, canonical=canonical, event_id=event_id, outcome=outcome, reason="refunded")


def _dispute_opened(*, provider, canonical, event_id, outcome, uow, reads):
    _payment_revoked(provider=provider, canonical=canonical, event_id=event_id, outcome=outcome, reason="disputed")


def _payment_failed(*, provider, canonical, event_id, outcome, uow, reads):
    outcome.customer = customer_resolve(provider=provider, buyer=canonical["data"]["buyer"], event_id=event_id, uow=uow, reads=reads)
    outcome.payment_failed = True


HANDLERS = {
    "payhook.payment.succeeded.v1": _payment_succeeded,
    "payhook.subscription.activated.v1": _subscription_activated,
    "payhook.subscription.canceled.v1": _subscription_canceled,
    "payhook.payment.refunded.v1": _payment_refunded,
    "payhook.dispute.opened.v1": _dispute_opened,
    "payhook.payment.failed.v1": _payment_failed,
}


def canonical_event_fulfil(
    *, provider: str, canonical: dict, event_id, uow: UnitOfWork | None = None, subjects: dict | None = None,
    reads: FulfilmentReads | None = None,
) -> FulfilmentOutcome:
    """Apply one canonical event's entitlement effects; audit them; notify the user.

    The audit entries and e-mails go to `uow` when given (event processing flushes it before its
    commit); without one they are written at once. `subjects` are the event's buyer identifiers
    (`canonical.subjects`; computed from `canonical` when not given): every entry this writes, and
    the notifications it causes, carry them besides the customer's own. `reads` answers the catalog,
    user and preference reads (fulfillment/reads.py: prefetched for a batch; by default one query each).
    """
    reads = reads or FulfilmentReads()
    outcome = FulfilmentOutcome()
    HANDLERS[canonical["type"]](provider=provider, canonical=canonical, event_id=event_id, outcome=outcome, uow=uow, reads=reads)
    if subjects is None:
        subjects = canonical_subjects([canonical])
    _effects_announce(canonical=canonical, outcome=outcome, event_id=event_id, uow=uow, subjects=subjects, reads=reads)
    if outcome.granted:  # what the buyer waited, payment to access; observed only if the grant commits
        paid_at = _fact_time(canonical)
        transaction.on_commit(lambda: metrics.payment_to_entitlement_seconds.labels(provider=provider).observe(
            max((timezone.now() - paid_at).total_seconds(), 0.0)))
    return outcome


def _subjects(customer: Customer | None) -> dict[str, str]:
    if customer is None:
        return {}
    subjects = {}
    if customer.provider_customer_id:
        subjects["customer"] = customer.provider_customer_id
    if customer.user_id:
        subjects["user"] = str(customer.user_id)
    if customer.email_encrypted:
        subjects["email"] = encryption.decrypt(customer.email_encrypted).decode()
    return subjects


def _entitlement_subjects(row: Entitlement, *, customer_subjects: dict, event_subjects: dict) -> dict[str, list[str]]:
    """A row's buyer (its customer's ids), its payment and subscription, and the event's buyer ids."""
    own = {}
    if row.payment_intent:
        own["payment"] = row.payment_intent
    if row.source.startswith("subscription:"):
        own["subscription"] = row.source.removeprefix("subscription:")
    return subjects_merge(customer_subjects, own, event_subjects)


def _latest_expiry(rows: list[Entitlement]) -> str | None:
    expiries = [row.expires_at for row in rows if row.expires_at]
    return max(expiries).isoformat() if expiries else None


def _effects_announce(
    *, canonical: dict, outcome: FulfilmentOutcome, event_id, uow: UnitOfWork | None, subjects: dict, reads: FulfilmentReads
) -> None:
    customer = outcome.customer
    customers_subjects: dict[int, dict] = {}  # one decryption per customer, not per row

    def customer_subjects(customer: Customer) -> dict:
        if customer.pk not in customers_subjects:
            customers_subjects[customer.pk] = _subjects(customer)
        return customers_subjects[customer.pk]

    def row_subjects(row: Entitlement) -> dict[str, list[str]]:
        return _entitlement_subjects(row, customer_subjects=customer_subjects(row.customer), event_subjects=subjects)

    for action, rows in (("entitlement.granted", outcome.granted), ("entitlement.revoked", outcome.revoked)):
        for row in rows:
            audit_entry_append(
                action=action,
                event_id=event_id,
                data={
                    # None, not "": the redactor reads an empty id or reason as a value of the wrong
                    # shape and writes "[dropped]", as if something had been withheld.
                    "entitlement": row.key, "source": row.source, "payment_intent": row.payment_intent or None,
                    "expires_at": row.expires_at.isoformat() if row.expires_at else None,
                    "reason": row.revoke_reason or None, "canonical_event": canonical["id"],
                },
                subjects=row_subjects(row),
                dedup_key=f"{action}:{row.id}:{canonical['idempotencykey']}",
                uow=uow,
            )
    for row, block in outcome.blocked:
        audit_entry_append(
            action="entitlement.blocked",
            event_id=event_id,
            data={
                "entitlement": row.key, "source": row.source, "payment_intent": row.payment_intent,
                "reason": block.reason, "blocking_event": str(block.event_id) if block.event_id else None,
                "canonical_event": canonical["id"],
            },
            subjects=row_subjects(row),
            dedup_key=f"entitlement.blocked:{row.id}:{canonical['idempotencykey']}",
            uow=uow,
        )
    user = customer.user if customer is not None else None
    if user is None:
        return  # a guest: entitlements wait on the customer record until a user is linked
    # What the notifications' audit entries carry besides the user and the notification.
    notified = subjects_merge(customer_subjects(customer), subjects)
    preferences = reads.preferences(user.pk)
    if outcome.granted:
        notification_send(
            event_id=event_id, user=user, template="access_granted", uow=uow, preferences=preferences, category="access", subjects=notified,
            context={"entitlements": sorted({row.key for row in outcome.granted}), "expires_at": _latest_expiry(outcome.granted)},
        )
    if outcome.revoked:
        notification_send(
            event_id=event_id, user=user, template="access_revoked", uow=uow, preferences=preferences, category="access", subjects=notified,
            context={"entitlements": sorted({row.key for row in outcome.revoked}), "reason": outcome.revoked[0].revoke_reason},
        )
    if outcome.payment_failed:
        data = canonical["data"]
        notification_send(
            event_id=event_id, user=user, template="payment_failed", uow=uow, preferences=preferences, category="billing", subjects=notified,
            context={"amount": data.get("amount"), "currency": data.get("currency")},
        )
