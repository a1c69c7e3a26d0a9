"""Endpoints and their secrets: create, change, rotate, remove — each change audited and bumping
`secrets_version`, so every web process verifies with current keys from its next request on."""

import hashlib
import hmac
import logging
import re
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from audit.models import AuditAction
from audit.services import audit_entry_append
from config import encryption
from providers import SCHEMES, scheme_get
from webhooks.exceptions import (
    EndpointNotFound,
    InvalidSecret,
    WebhookError,
)
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.receiving import endpoint_cache_clear
from webhooks.throttling import sources_cache_clear, sources_parse

logger = logging.getLogger(__name__)



def secret_fingerprint(secret: str) -> str:
    """The display name of a secret in lists and the audit log (keyed, so it confirms no guess).

    Stored when the secret is added and never recomputed: nothing looks a secret up by it, so a
    BLIND_INDEX_KEY rotation changes only the names of secrets added afterwards.
    """
    return hmac.new(settings.BLIND_INDEX_KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()[:16]


def _secret_hint(secret: str) -> str:
    prefix, sep, _ = secret.partition("_")
    return f"{prefix}_" if sep else ""


_DURATION = re.compile(r"^(\d{1,6})([smhd]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def secret_expiry_parse(text: str) -> timedelta:
    """`24h`, `30m`, `7d`, `90s`, `0` (now) → a timedelta; raises InvalidSecret with the accepted forms."""
    match = _DURATION.match(text.strip())
    if not match or (match.group(2) == "" and match.group(1) != "0"):
        raise InvalidSecret("a duration is a number with a unit: 90s, 30m, 24h, 7d, or 0 for now")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > 365 * 86400:
        raise InvalidSecret("a duration is at most 365 days")
    return timedelta(seconds=seconds)


def _endpoint_lock(endpoint_id: int) -> WebhookEndpoint:
    """Lock the endpoint row: secret changes of one endpoint are serialised (the duplicate check
    compares decrypted values, which no unique constraint can do)."""
    return WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)


@sensitive_variables()  # every local: keys, secrets, the body
def _secret_matching(endpoint: WebhookEndpoint, secret: str) -> EndpointSecret | None:
    """The endpoint's row holding `secret`, found by decrypting each (an endpoint has a handful) and
    comparing in constant time: independent of any fingerprint key, so no rotation can make it miss."""
    wanted = secret.encode()
    found = None
    for row in EndpointSecret.objects.filter(endpoint=endpoint).order_by("created_at", "id"):
        if hmac.compare_digest(encryption.decrypt(row.value_encrypted), wanted) and found is None:
            found = row
    return found


def _secrets_changed(endpoint: WebhookEndpoint) -> None:
    """Every web process sees the new version on its next stored event (or failed verification)
    and reloads; this process forgets its copy at commit."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secrets_version=F("secrets_version") + 1)
    transaction.on_commit(endpoint_cache_clear)


def _secret_audit(action: str, *, endpoint: WebhookEndpoint, row: EndpointSecret, actor: str, source: str, **data) -> None:
    audit_entry_append(
        action=action,
        actor=actor,
        data={
            "endpoint_id": endpoint.pk, "slug": endpoint.slug, "key_fingerprint": row.fingerprint, "kind": row.kind,
            "source": source, **data,
        },
    )


@transaction.atomic
def webhook_endpoint_create(
    *, slug: str, scheme: str, secret: str, description: str = "", mode: str = "live",
    allowed_sources: list[str] | tuple[str, ...] = (), actor: str = "system", source: str = "command"
) -> WebhookEndpoint:
    if scheme not in SCHEMES:
        raise InvalidSecret(f"unknown scheme {scheme!r}; known: {', '.join(sorted(SCHEMES))}")
    if mode not in ("live", "test"):
        raise WebhookError(f"unknown mode {mode!r}; known: live, test")
    sources = sources_parse(allowed_sources)
    endpoint, created = WebhookEndpoint.objects.get_or_create(
        slug=slug, defaults={"scheme": scheme, "description": description, "mode": mode, "allowed_sources": sources}
    )
    if not created:
        raise WebhookError(f"endpoint {slug!r} already exists")
    transaction.on_commit(sources_cache_clear)  # this process may remember the slug as unknown
    endpoint_secret_add(endpoint=endpoint, secret=secret, actor=actor, source=source)
    return endpoint


_UNCHANGED = object()


@transaction.atomic
def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, actor: str, source: str, note: str = "", slug=_UNCHANGED, scheme=_UNCHANGED,
    description=_UNCHANGED, is_active=_UNCHANGED, mode=_UNCHANGED, allowed_sources=_UNCHANGED,
) -> list[str]:
    """Change an endpoint's settings (secrets have their own services); returns the fields changed.

    A change of what the endpoint accepts (slug, scheme, is_active, mode, allowed_sources) is
    audited as `endpoint.changed`; a description alone is not. Source networks are counted, not
    listed: addresses never go into the audit log.
    """
    if scheme is not _UNCHANGED and scheme not in SCHEMES:
        raise InvalidSecret(f"unknown scheme {scheme!r}; known: {', '.join(sorted(SCHEMES))}")
    if mode is not _UNCHANGED and mode not in ("live", "test"):
        raise WebhookError(f"unknown mode {mode!r}; known: live, test")
    if allowed_sources is not _UNCHANGED:
        allowed_sources = sources_parse(allowed_sources or [])
    row = _endpoint_lock(endpoint.pk)
    wanted = {
        "slug": slug, "scheme": scheme, "description": description, "is_active": is_active, "mode": mode,
        "allowed_sources": allowed_sources,
    }
    changes = {}
    for name, value in wanted.items():
        if value is not _UNCHANGED and getattr(row, name) != value:
            changes[name] = (getattr(row, name), value)
            setattr(row, name, value)
    if not changes:
        return []
    # update_fields: never write secrets_version from this copy (see WebhookEndpointAdmin.save_model).
    row.save(update_fields=list(changes))
    for name, (_, value) in changes.items():
        setattr(endpoint, name, value)
    transaction.on_commit(sources_cache_clear)
    transaction.on_commit(endpoint_cache_clear)
    audited = {name: pair for name, pair in changes.items() if name != "description"}
    if audited:
        data = {"endpoint_id": row.pk, "fields": sorted(audited), "source": source, "note": note.strip() or None}
        for name, (before, after) in audited.items():
            if name == "allowed_sources":
                data["allowed_sources_count"] = {"before": len(before), "after": len(after)}
            else:
                data[name] = {"before": before, "after": after}
        data.setdefault("slug", {"before": row.slug, "after": row.slug})
        audit_entry_append(action=AuditAction.ENDPOINT_CHANGED, actor=actor, data=data)
    return list(changes)


@transaction.atomic
def endpoint_secret_add(
    *,
    endpoint: WebhookEndpoint,
    secret: str,
    expire_others_in: timedelta | None = None,
    actor: str = "system",
    source: str = "command",
) -> EndpointSecret:
    """Add a secret that verifies from the next request on, in every web process.

    With `expire_others_in` (a "roll"), the endpoint's other secrets stop verifying that long from
    now (a secret already due sooner keeps its earlier time). Audited as `endpoint.secret_added`,
    with the fingerprints of the secrets set to expire.
    """
    key = scheme_get(endpoint.scheme).secret_parse(secret)
    endpoint = _endpoint_lock(endpoint.pk)
    if _secret_matching(endpoint, secret) is not None:
        raise InvalidSecret("this secret is already on the endpoint")
    row = EndpointSecret.objects.create(
        endpoint=endpoint,
        kind=key.kind,
        value_encrypted=encryption.encrypt(secret.encode()),
        fingerprint=secret_fingerprint(secret),
        hint=_secret_hint(secret),
    )
    data = {}
    if expire_others_in is not None:
        expires_at = timezone.now() + expire_others_in
        others = EndpointSecret.objects.filter(endpoint=endpoint).exclude(pk=row.pk)
        expiring = list(
            others.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=expires_at)).values_list("fingerprint", flat=True)
        )
        others.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=expires_at)).update(expires_at=expires_at)
        data = {"others_expire_at": expires_at.isoformat(), "expiring_key_fingerprints": sorted(expiring)}
    _secrets_changed(endpoint)
    _secret_audit(AuditAction.ENDPOINT_SECRET_ADDED, endpoint=endpoint, row=row, actor=actor, source=source, **data)
    return row


def _secret_delete(endpoint: WebhookEndpoint, row: EndpointSecret, *, actor: str, source: str) -> None:
    row.delete()
    _secrets_changed(endpoint)
    _secret_audit(AuditAction.ENDPOINT_SECRET_REMOVED, endpoint=endpoint, row=row, actor=actor, source=source)


@transaction.atomic
def endpoint_secret_remove(
    *, endpoint: WebhookEndpoint, secret: str, actor: str = "system", source: str = "command"
) -> EndpointSecret:
    """Remove the secret (found by value, not by fingerprint); it refuses from the next request on."""
    endpoint = _endpoint_lock(endpoint.pk)
    row = _secret_matching(endpoint, secret)
    if row is None:
        raise InvalidSecret("no such secret on this endpoint")
    _secret_delete(endpoint, row, actor=actor, source=source)
    return row


@transaction.atomic
def endpoint_secret_delete(*, secret_id: int, actor: str, source: str = "admin") -> EndpointSecret:
    """Remove a secret picked by its row (the admin, which never sees the value)."""
    row = EndpointSecret.objects.filter(pk=secret_id).first()
    if row is None:
        raise InvalidSecret("no such secret")
    endpoint = _endpoint_lock(row.endpoint_id)
    _secret_delete(endpoint, row, actor=actor, source=source)
    return row


def webhook_endpoint_get(*, slug: str) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.get(slug=slug)
    except WebhookEndpoint.DoesNotExist:
        raise EndpointNotFound(f"no endpoint {slug!r}") from None


@sensitive_variables()  # every local: keys, secrets, the body
def endpoint_secrets_decrypted(*, endpoint: WebhookEndpoint) -> list[str]:
    return [encryption.decrypt(row.value_encrypted).decode() for row in endpoint.secrets.all()]
