import json
from datetime import datetime

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse

from config.admin import ReadOnlyAdminMixin
from support.exceptions import InvalidLookupQuery
from support.models import Lookup
from support.selectors import (
    DROPPED,
    MAX_QUERY_LENGTH,
    customer_timeline,
    lookup_query_clean,
)
from support.services import customer_lookup_audit

# Admin pages a link in the timeline may open, by link kind; shown only to whom may view them.
_LINK_TARGETS = {
    "event": ("webhooks.view_webhookevent", "admin:webhooks_webhookevent_change"),
    "audit_entry": ("audit.view_auditentry", "admin:audit_auditentry_change"),
    "entitlement": ("fulfillment.view_entitlement", "admin:fulfillment_entitlement_change"),
    "notification": ("notifications.view_notification", "admin:notifications_notification_change"),
    "dead_letter": ("webhooks.view_deadletter", "admin:webhooks_deadletter_change"),
}
_LINK_LABELS = {"event": "event", "audit_entry": "audit", "entitlement": "entitlement", "notification": "notification",
                "dead_letter": "dead letter"}


def _links(links, allowed: set[str]) -> list[dict]:
    found = []
    for name, (_, url_name) in _LINK_TARGETS.items():
        value = getattr(links, name)
        if value is None or name not in allowed:
            continue
        try:
            url = reverse(url_name, args=[value])
        except NoReverseMatch:
            continue
        found.append({"label": _LINK_LABELS[name], "url": url, "id": str(value)})
    return found


# Badge colours: green where things went right, amber where something waits or was held back, red
# where access ended or work failed; grey for the rest (ignored, discarded).
_STATUS_TONES = {
    "ok": {"processed", "active", "granted", "sent", "resolved"},
    "warn": {"suppressed", "queued", "sending", "received", "processing", "replayed", "blocked"},
    "bad": {"failed", "dead", "revoked", "open", "refunded", "disputed"},
}
_KIND_TONES = {"event": "info", "entitlement": "violet", "notification": "ok", "dead_letter": "bad", "refund": "bad"}


def _status_tone(status: str) -> str:
    return next((tone for tone, statuses in _STATUS_TONES.items() if status in statuses), "")


# Long ids support does not act on; the API keeps them.
_DETAIL_HIDDEN = {"canonical_event"}
# The timeline's filter chips: (kind parameter, label, item kinds shown).
KIND_FILTERS = [
    ("", "Everything", None),
    ("events", "Events", {"event", "dead_letter"}),
    ("access", "Entitlements & refunds", {"entitlement", "refund"}),
    ("notifications", "Notifications", {"notification"}),
    ("audit", "Audit log", {"audit"}),
]


def _detail_pairs(detail: dict) -> list[tuple[str, str]]:
    """`detail` (and an audit entry's `data`) as short key/value strings, empty values left out."""
    pairs = []
    for key, value in detail.items():
        if key == "data" and isinstance(value, dict):
            pairs += _detail_pairs(value)
        elif key not in _DETAIL_HIDDEN and value not in (None, "", [], {}, DROPPED):
            if isinstance(value, datetime):
                value = value.strftime("%Y-%m-%d %H:%M:%S")
            elif isinstance(value, (list, dict)):
                value = json.dumps(value, default=str)
            pairs.append((key, str(value)))
    return pairs


@admin.register(Lookup)
class LookupAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The "Customer lookup" page: one search, a customer's whole story (support/selectors.py)."""

    def get_urls(self):
        # Only the page itself: the model has no table, so there is no object to add, change or list.
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.changelist_view), name=name)]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        raw = request.GET.get("q", "")
        shown = request.GET.get("kind", "")
        kinds = next((kinds for name, _, kinds in KIND_FILTERS if name == shown), None)
        timeline, error, rows, term = None, "", [], ""
        if raw.strip(" "):  # a lone newline is refused below, not taken for an empty search
            try:
                # The API's rules: a control, format or separator character (a trailing newline
                # too) is refused with a message, and the refused term is not echoed back.
                term = lookup_query_clean(raw)
                timeline = customer_timeline(q=term)
            except InvalidLookupQuery as exc:
                error, term = exc.message, ""
        if timeline is not None:
            customer_lookup_audit(actor=str(request.user.pk), timeline=timeline, via="admin")
        if timeline is not None:
            allowed = {name for name, (permission, _) in _LINK_TARGETS.items() if request.user.has_perm(permission)}
            rows = [
                {
                    "item": item, "links": _links(item.links, allowed), "detail": _detail_pairs(item.detail),
                    "status_tone": _status_tone(item.status), "kind_tone": _KIND_TONES.get(item.kind, ""),
                    "kind_label": item.kind.replace("_", " "),
                }
                for item in timeline.items
                if kinds is None or item.kind in kinds
            ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Customer lookup",
            "subtitle": None,
            "opts": self.model._meta,
            "term": term,
            "max_length": MAX_QUERY_LENGTH,
            "error": error,
            "timeline": timeline,
            "rows": rows,
            "kind_filters": [
                {"name": name, "label": label, "selected": name == shown or (kinds is None and not name),
                 "count": len(timeline.items) if kinds_of is None else sum(1 for item in timeline.items if item.kind in kinds_of)}
                for name, label, kinds_of in KIND_FILTERS
            ] if timeline is not None else [],
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/support/customer_lookup.html", context)
