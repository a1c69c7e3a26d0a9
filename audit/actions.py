"""What each audit action may keep in its `data`: an allow-list of keys, each with its kind.

An audit row outlives every other record and is never rewritten, so its `data` is built from an
allow-list rather than scrubbed of what a detector recognises: a key that is not listed here is
dropped, and a listed value that does not have its kind's shape is replaced by `[dropped]`
(`audit.redaction.audit_data_shape`). Personal identifiers that support staff search by (email,
customer, user) are never data: callers pass them as `subjects`, stored only as blind-index hashes.

Kinds (checked in `audit.redaction`):
  id         a provider or internal identifier (`evt_…`, `sub_…`, a UUID, `payment:pi_…`, an int)
  code       a short machine name (event type, template, task name, exception class, slug)
  label      up to six lower-case code words set by our code (`command webhook_endpoint add-secret`)
  enum       one of a fixed set of values
  amount     an integer in minor units
  currency   an ISO 4217 code
  timestamp  an ISO 8601 date-time string or a unix time
  hash       a hex digest (a keyed fingerprint)
  count      a non-negative integer
  boolean    true or false
  note       an operator's free-text note: every detector applied (redact_text), 500 characters at most
  [kind]     a list of values of that kind
  {key: kind} an object holding only those keys

Adding an action: add it to `audit.models.AuditAction` and here; a test fails when the code emits
an action (or a key) that is not listed.
"""

ID, CODE, LABEL, AMOUNT, CURRENCY, TIMESTAMP, HASH, COUNT, BOOLEAN, NOTE = (
    "id", "code", "label", "amount", "currency", "timestamp", "hash", "count", "boolean", "note",
)


def enum(*values: str) -> tuple:
    return ("enum", frozenset(values))


_EVENT_STATUS = enum("received", "processing", "processed", "ignored", "failed", "dead")
_ENTITLEMENT_EFFECT = {
    "entitlement": CODE, "entitlement_key": CODE, "source": ID, "payment_intent": ID, "expires_at": TIMESTAMP,
    "reason": LABEL, "canonical_event": ID,
    # Operator changes through the admin (fulfillment.services.entitlement_revoke/_restore).
    "entitlement_id": ID, "customer_id": ID, "entitlement_source": ID, "note": NOTE,
}
_NOTIFICATION = {"channel": enum("email", "in_app"), "template": CODE, "category": CODE, "reason": CODE}
_DEAD_LETTER_ACTION = {"dead_letter": ID, "task": CODE, "note": NOTE}
_BEFORE_AFTER = lambda kind: {"before": kind, "after": kind}  # noqa: E731
_PRODUCT_CHANGE = {
    "product_id": ID, "provider": CODE, "price_id": ID, "entitlements_before": [CODE], "entitlements_after": [CODE],
    "fields": [CODE], "source": LABEL, "note": NOTE,
}
_SECRET_CHANGE = {
    "endpoint_id": ID, "slug": CODE, "key_fingerprint": HASH, "kind": CODE, "source": LABEL,
    "others_expire_at": TIMESTAMP, "expiring_key_fingerprints": [HASH],
}

ALLOWED_DATA: dict[str, dict] = {
    "webhook.received": {
        "endpoint": CODE, "type": CODE, "provider_event_id": ID, "canonical_types": [CODE],
    },
    "event.ignored": {"type": CODE, "reason": CODE, "mode": enum("live", "test")},
    "entitlement.granted": _ENTITLEMENT_EFFECT,
    "entitlement.revoked": _ENTITLEMENT_EFFECT,
    # A grant that lands revoked: `reason` (refunded, disputed, subscription_ended) and the stored
    # event that revoked it first (`blocking_event`; null for a subscription end).
    "entitlement.blocked": {
        "entitlement": CODE, "source": ID, "payment_intent": ID, "reason": LABEL, "blocking_event": ID,
        "canonical_event": ID,
    },
    "notification.sent": _NOTIFICATION,
    "notification.suppressed": _NOTIFICATION,
    "notification.failed": _NOTIFICATION,
    "task.dead_lettered": {"task": CODE, "error_type": CODE, "attempts": COUNT},
    "dlq.replayed": _DEAD_LETTER_ACTION,
    "dlq.resolved": _DEAD_LETTER_ACTION,
    "dlq.discarded": _DEAD_LETTER_ACTION,
    "event.reprocessed": {"previous_status": _EVENT_STATUS, "via": CODE},
    "event.payloads_removed": {"removed": COUNT, "cutoff": TIMESTAMP, "retention_days": COUNT},
    "endpoint.secret_added": _SECRET_CHANGE,
    "endpoint.secret_removed": _SECRET_CHANGE,
    "preferences.changed": {
        "changes": [{"category": CODE, "channel": enum("email", "in_app"), "enabled": BOOLEAN}],
        "source": LABEL,
        "user": ID,
    },
    "customer.linked": {"customer_id": ID, "from_user": ID, "to_user": ID, "source": LABEL, "note": NOTE},
    "product.created": _PRODUCT_CHANGE,
    "product.changed": _PRODUCT_CHANGE,
    "product.deleted": _PRODUCT_CHANGE,
    # The search term is never data: it is the `lookup` subject (a blind-index hash). The actor is
    # the support user's id; `via` says which page asked.
    "customer.looked_up": {
        "matched_kinds": [CODE], "found": BOOLEAN, "via": enum("api", "admin"),
        "counts": {
            "events": COUNT, "audit_entries": COUNT, "entitlements": COUNT, "active_entitlements": COUNT,
            "notifications": COUNT, "notifications_suppressed": COUNT, "dead_letters": COUNT, "refunds": COUNT,
        },
    },
    "endpoint.changed": {
        "endpoint_id": ID, "slug": _BEFORE_AFTER(CODE), "fields": [CODE], "is_active": _BEFORE_AFTER(BOOLEAN),
        "mode": _BEFORE_AFTER(enum("live", "test")), "scheme": _BEFORE_AFTER(CODE),
        "allowed_sources_count": _BEFORE_AFTER(COUNT),
        "source": LABEL, "note": NOTE,
    },
}
