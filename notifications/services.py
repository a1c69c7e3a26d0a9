import logging
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from email.utils import parseaddr

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from audit.services import audit_entry_append
from canonical.subjects import subjects_merge
from config.db import rows_insert_new
from config.unit_of_work import UnitOfWork
from notifications.exceptions import (
    CategoryMismatch,
    InvalidUnsubscribeToken,
    UnknownCategory,
    UnknownChannel,
    UserNotFound,
)
from notifications.models import PREFERENCE_DEFAULTS, Category, Channel, Notification, NotificationPreference
from notifications.registry import (
    notification_context_clean,
    notification_render,
    notification_render_optional,
    notification_template_get,
)
from notifications.selectors import notification_preferences_effective, notification_user_get

logger = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "payhook.notifications.unsubscribe"
# Kept in step with notifications/public_urls.py (mounted at /notifications/ by config/urls.py).
# Built by hand rather than reversed so a worker renders the link without the web URLconf.
UNSUBSCRIBE_PATH = "/notifications/unsubscribe/{token}/"


# --- Sending ----------------------------------------------------------------------------------------


def notification_send(
    *, event_id, user, template: str, category: str, context: dict, channels: tuple[str, ...] = (Channel.EMAIL, Channel.IN_APP),
    uow: UnitOfWork | None = None, subjects: dict | None = None, preferences: dict | None = None,
) -> list[Notification]:
    """Record, and where allowed deliver, one notification per channel for an event.

    Called inside the event's processing transaction. Per channel, one row per
    (event_id, user, channel, template) is written with INSERT … ON CONFLICT DO NOTHING under a unique constraint; a
    redelivered or replayed event finds the existing rows and sends nothing. Preferences decide:
    a channel they switch off (or an email to a user without an address) is stored `suppressed`
    with its reason and never sent. In-app rows are `sent` at once: being listed is the delivery.

    Email is at-most-once. The row is written `queued` here; after the caller's transaction commits
    (`transaction.on_commit`; with a unit of work `uow`, the e-mails of the whole unit are handed to
    one such hook when it is flushed) it is claimed `queued → sending` in its own commit, sent, and becomes
    `sent` (or `failed` with the exception type) in another, a window of NOTIFICATION_EMAIL_SEND_WINDOW
    messages at a time (notification_emails_deliver). A worker that
    dies before the claim leaves `queued`: nothing left, so the recovery task (`notification_emails_queued_deliver`, beat) sends it later. A worker that dies
    after the claim leaves `sending`: the message may or may not have left, and resending could mail
    the user twice, so nothing resends it. Such rows surface through
    `notification_stale_sending_list()` and the admin's "stale sending" filter for an operator.

    `subjects` are the buyer identifiers of the event that caused the notification (email, customer,
    payment, …): its `notification.sent/suppressed/failed` entries carry them besides the user and
    the notification, so a search by any of them finds what the buyer was told. They stay in
    memory (an e-mail's outcome is recorded after the commit by this process; one the recovery task
    sends later carries the user and notification only).

    `preferences`: the user's effective matrix when the caller read it already (set-based fulfilment
    reads those of a whole batch in one query, `notification_preferences_effective_many`); None
    reads it here.

    Raises UnknownNotificationTemplate, UnknownCategory, CategoryMismatch or UnknownChannel
    (permanent errors: a bug in the caller, not a transient condition).
    """
    spec = notification_template_get(template)
    if category not in Category.values:
        raise UnknownCategory(f"unknown notification category {category!r}")
    if category != spec.category:
        raise CategoryMismatch(f"template {template!r} belongs to category {spec.category!r}, not {category!r}")
    for channel in channels:
        if channel not in Channel.values:
            raise UnknownChannel(f"unknown notification channel {channel!r}")

    event_uuid = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
    clean_context = notification_context_clean(template=spec, context=context)
    return _notifications_write(
        event_uuid=event_uuid, user=user, spec=spec, template=template, category=category, context=clean_context,
        channels=channels, uow=uow, subjects=subjects or {}, preferences=preferences,
    )


# No savepoint: validation ran before, and an ON CONFLICT insert does not fail on a duplicate.
@transaction.atomic(savepoint=False)
def _notifications_write(
    *, event_uuid, user, spec, template, category, context, channels, uow, subjects, preferences=None
) -> list[Notification]:
    clean_context = context
    if preferences is None:
        preferences = notification_preferences_effective(user_id=user.pk)
    subject = notification_render(template=spec, part="subject.txt", context=clean_context)
    now = timezone.now()

    # One INSERT … ON CONFLICT DO NOTHING for all channels, then one read: the rows whose id is the
    # one generated here are new. No check-then-insert, and no savepoint on the hot path.
    fresh = []
    for channel in channels:
        status, reason = _decision(user=user, enabled=preferences[category][channel], channel=channel)
        fresh.append(
            Notification(
                event_id=event_uuid,
                user=user,
                channel=channel,
                template=template,
                category=category,
                status=status,
                reason=reason,
                subject=subject,
                body=notification_render(template=spec, part="in_app.txt", context=clean_context) if channel == Channel.IN_APP else "",
                context=clean_context,
                created_at=now,
                sent_at=now if status == Notification.Status.SENT else None,
            )
        )
    # The database says which rows are new (its unique constraint, never a check first); only a
    # redelivery, which finds rows already there, reads the stored ones back.
    new_ids = rows_insert_new(fresh, conflict_fields=("event_id", "user", "channel", "template"))
    stored = {row.channel: row for row in fresh if row.id in new_ids}
    for row in stored.values():
        row._state.adding, row._state.db = False, "default"
    if len(stored) < len(fresh):
        stored.update(
            (row.channel, row)
            for row in Notification.objects.filter(event_id=event_uuid, user=user, template=template, channel__in=channels)
            if row.channel not in stored
        )
    notifications = []
    for channel in channels:
        notification = stored[channel]
        notifications.append(notification)
        if notification.id not in new_ids:
            # A redelivery, a replay or a retry after a crash: whatever happened the first time
            # stands, including a `sending` row whose outcome is unknown.
            continue
        if notification.status != Notification.Status.QUEUED:
            _audit(notification, uow=uow, subjects=subjects)
        elif uow is not None:
            uow.defer(writer=_deliveries_schedule, item=(notification.id, subjects))
        else:
            _deliveries_schedule([(notification.id, subjects)])
    return notifications


def notification_preferences_effective_many(*, user_ids: list[int]) -> dict[int, dict[str, dict[str, bool]]]:
    """`notification_preferences_effective` for many users in one query: {user id: matrix}."""
    matrices = {
        user_id: {category: {channel: PREFERENCE_DEFAULTS[(category, channel)] for channel in Channel.values}
                  for category in Category.values}
        for user_id in user_ids
    }
    for user_id, category, channel, enabled in NotificationPreference.objects.filter(user_id__in=user_ids).values_list(
        "user_id", "category", "channel", "enabled"
    ):
        if category in matrices[user_id] and channel in matrices[user_id][category]:
            matrices[user_id][category][channel] = enabled
    return matrices


def _decision(*, user, enabled: bool, channel: str) -> tuple[str, str]:
    if not enabled:
        return Notification.Status.SUPPRESSED, Notification.Reason.PREFERENCE_OFF
    if channel == Channel.IN_APP:
        return Notification.Status.SENT, ""
    if not (user.email or "").strip():
        return Notification.Status.SUPPRESSED, Notification.Reason.NO_EMAIL_ADDRESS
    return Notification.Status.QUEUED, ""


def _deliveries_schedule(items: list[tuple]) -> None:
    """`items`: (notification id, the buyer subjects its outcome's audit entry carries)."""
    notification_ids = [notification_id for notification_id, _ in items]
    subjects = {str(notification_id): item_subjects for notification_id, item_subjects in items if item_subjects}
    # robust: a failing delivery must not raise into the worker after its event committed.
    transaction.on_commit(
        lambda: notification_emails_deliver(notification_ids=notification_ids, subjects=subjects), robust=True
    )


def notification_email_deliver(*, notification_id) -> str | None:
    """Send one `queued` email row and record the outcome; see notification_emails_deliver."""
    return notification_emails_deliver(notification_ids=[notification_id]).get(str(notification_id))


def notification_emails_queued_deliver(*, older_than_seconds: float | None = None, limit: int = 500) -> int:
    """Send queued emails whose worker died before handing them to the backend (recovery, beat).

    Safe against a live worker sending the same row: both go through the claim, and one wins.
    """
    if older_than_seconds is None:
        older_than_seconds = settings.NOTIFICATION_RECOVERY_AFTER_SECONDS
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Notification.objects.filter(status=Notification.Status.QUEUED, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    )
    return len(notification_emails_deliver(notification_ids=ids)) if ids else 0


def notification_emails_deliver(*, notification_ids: list, subjects: dict[str, dict] | None = None) -> dict[str, str]:
    """Send `queued` email rows and record each outcome. Returns {notification id: final status};
    rows that are not (any longer) `queued` are left out.

    In windows of NOTIFICATION_EMAIL_SEND_WINDOW rows: claim the window (`queued → sending`, one
    commit), send its messages over one backend connection, record their outcomes (`sent` or
    `failed`, with their audit entries) in one commit, then the next window. A process that dies
    mid-window leaves that window's rows `sending` (at most a window: the one on the wire and the
    ones it had claimed; whether each left is unknown, so nothing resends them and the mail
    provider's delivery events settle them, see notification_email_provider_event); the rows of
    later windows stay `queued` for the recovery task. A window of 1 is the strictest setting (at
    most one row `sending`) and costs two commits per e-mail; the default window makes that a few
    statements per batch of e-mails. No transaction is held open while the backend talks to the
    mail server. `subjects` maps a notification id to the buyer subjects of its outcome's audit entry.
    """
    outcomes: dict[str, str] = {}
    window = max(1, settings.NOTIFICATION_EMAIL_SEND_WINDOW)
    with get_connection() as mail:
        for start in range(0, len(notification_ids), window):
            sent = []
            for notification in _emails_claim(notification_ids[start : start + window]):
                try:
                    _email_message(notification, mail).send()
                except Exception as exc:  # noqa: BLE001 - any backend error; the outcome is recorded, never retried
                    # Only the type: SMTP and provider errors quote recipient addresses in their messages.
                    sent.append((notification, Notification.Status.FAILED, type(exc).__name__))
                else:
                    sent.append((notification, Notification.Status.SENT, ""))
            if sent:
                outcomes.update(_email_outcomes_record_persistently(sent, subjects=subjects or {}))
    return outcomes


# The outcome of a send is known only to the process that sent it; losing it to a database blip would
# turn a delivered e-mail into an ambiguous `sending` row. So recording is retried for ~15 s.
_RECORD_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


def _email_outcomes_record_persistently(sent: list[tuple], *, subjects: dict[str, dict]) -> dict[str, str]:
    for delay in _RECORD_RETRY_DELAYS:
        if connection.in_atomic_block:
            break  # inside a caller's transaction a retry cannot help: record once, below
        try:
            with transaction.atomic():
                return _email_outcomes_record(sent, subjects=subjects)
        except (OperationalError, InterfaceError) as exc:
            logger.warning("notification email outcome record will retry: emails=%s error=%s in=%.1fs",
                           len(sent), type(exc).__name__, delay)
            connection.close()  # a connection the database dropped is not reused
            time.sleep(delay)
    try:
        with transaction.atomic():
            return _email_outcomes_record(sent, subjects=subjects)
    except (OperationalError, InterfaceError) as exc:
        logger.error("notification email outcomes not recorded, rows stay sending: notifications=%s error=%s",
                     ",".join(str(notification.id) for notification, _, _ in sent), type(exc).__name__)
        raise


def _emails_claim(notification_ids: list) -> list[Notification]:
    """queued → sending for those of `notification_ids` still queued, committed before anything is
    sent; in the order given. Only the claimant sends, so two deliverers (the worker and the recovery
    task) never send one row twice: SKIP LOCKED leaves a row the other is claiming to it."""
    with transaction.atomic():
        claimed = {
            notification.id: notification
            for notification in Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("user")
            .filter(id__in=notification_ids, status=Notification.Status.QUEUED)
        }
        if not claimed:
            return []
        for notification in claimed.values():
            notification.status = Notification.Status.SENDING
            notification.message_id = _message_id(notification)
        Notification.objects.filter(id__in=list(claimed)).update(
            status=Notification.Status.SENDING,
            message_id=Case(*(When(id=pk, then=Value(row.message_id)) for pk, row in claimed.items())),
        )
    by_id = {str(pk): row for pk, row in claimed.items()}
    return [by_id[str(pk)] for pk in dict.fromkeys(map(str, notification_ids)) if str(pk) in by_id]


def _message_id(notification: Notification) -> str:
    """A Message-ID made from the notification id: an operator can look an ambiguous row up in the
    mail provider's logs, and tracking events that quote the header find the row again."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "payhook.invalid"
    return f"<notification.{notification.id}@{domain}>"


def _email_message(notification: Notification, mail) -> EmailMultiAlternatives:
    spec = notification_template_get(notification.template)
    unsubscribe_url = notification_unsubscribe_url(user_id=notification.user_id, category=notification.category)
    message = EmailMultiAlternatives(
        subject=notification.subject,
        body=notification_render(template=spec, part="email.txt", context=notification.context, unsubscribe_url=unsubscribe_url),
        from_email=settings.DEFAULT_FROM_EMAIL,
        # Read at send time and never stored on the row, logged or audited.
        to=[notification.user.email],
        connection=mail,
        headers={
            # RFC 8058 one-click unsubscribe: mail providers POST to the URL without a visit.
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
            "X-Payhook-Notification-Id": str(notification.id),
            "Message-ID": notification.message_id or _message_id(notification),
        },
    )
    # django-anymail sends this with the message and hands it back on the provider's tracking events
    # (see notification_email_provider_event); other backends ignore the attribute.
    message.metadata = {"notification_id": str(notification.id)}
    html = notification_render_optional(template=spec, part="email.html", context=notification.context, unsubscribe_url=unsubscribe_url)
    if html:
        message.attach_alternative(html, "text/html")
    return message


def _email_outcome_record(notification: Notification, status: str, *, error_type: str = "", subjects=None) -> str:
    notification.status = status
    notification.error_type = error_type[:100]
    notification.sent_at = timezone.now() if status == Notification.Status.SENT else None
    # Conditional on `sending` so an operator's manual change in the meantime is not overwritten.
    updated = Notification.objects.filter(id=notification.id, status=Notification.Status.SENDING).update(
        status=status, error_type=notification.error_type, sent_at=notification.sent_at
    )
    if updated:
        _audit(notification, subjects=subjects)
    if status == Notification.Status.FAILED:
        logger.warning("notification email failed: notification=%s template=%s error=%s", notification.id, notification.template, error_type)
    else:
        logger.info("notification email sent: notification=%s template=%s", notification.id, notification.template)
    return status


def _email_outcomes_record(sent: list[tuple], *, subjects: dict[str, dict]) -> dict[str, str]:
    """Record a window's outcomes, `sent` = [(notification, status, error type)], in the caller's
    transaction: one UPDATE per distinct outcome and one audit flush for the window. Conditional on
    `sending`, as one by one: a row an operator (or a provider event) settled meanwhile is left as it
    is, and not audited again. Returns {notification id: status}."""
    now = timezone.now()
    ids = [notification.id for notification, _, _ in sent]
    still_sending = set(
        Notification.objects.select_for_update().filter(id__in=ids, status=Notification.Status.SENDING).values_list("id", flat=True)
    )
    uow = UnitOfWork()  # the window's audit entries: one chain append, in send order
    updates: dict[tuple[str, str], list] = defaultdict(list)
    outcomes: dict[str, str] = {}
    for notification, status, error_type in sent:
        notification.status, notification.error_type = status, error_type[:100]
        notification.sent_at = now if status == Notification.Status.SENT else None
        outcomes[str(notification.id)] = status
        if notification.id in still_sending:
            updates[(status, notification.error_type)].append(notification.id)
            _audit(notification, uow=uow, subjects=subjects.get(str(notification.id)))
        if status == Notification.Status.FAILED:
            logger.warning("notification email failed: notification=%s template=%s error=%s", notification.id, notification.template, error_type)
        else:
            logger.info("notification email sent: notification=%s template=%s", notification.id, notification.template)
    for (status, error_type), row_ids in updates.items():
        Notification.objects.filter(id__in=row_ids).update(
            status=status, error_type=error_type, sent_at=now if status == Notification.Status.SENT else None
        )
    uow.flush()
    return outcomes


# --- Delivery events from the mail provider ---------------------------------------------------------

# Normalised by django-anymail (anymail.signals.EventType). Any of the first set proves the provider
# took the message, so it left; the second set says the provider refused or could not deliver it.
PROVIDER_EVENTS_SENT = frozenset({"queued", "sent", "deferred", "delivered", "autoresponded", "opened", "clicked",
                                  "complained", "unsubscribed"})
PROVIDER_EVENTS_FAILED = frozenset({"rejected", "failed", "bounced"})


def notification_email_provider_event(*, event_type: str, notification_id: str = "", message_id: str = "") -> str | None:
    """Settle a `sending` e-mail from the mail provider's delivery event. Returns the new status, or
    None when the event settles nothing (unknown message, not `sending`, an event type that says
    nothing about delivery).

    A worker that died between the claim and the record leaves the row `sending`: whether the
    message left is unknown to us, but known to the provider. Its tracking events (django-anymail
    normalises them for every provider it supports) name the row by the metadata sent with the
    message (`notification_id`) or by our Message-ID. Rows in any other state are left alone: a
    `sent` row stays `sent` whatever the provider says later, and nothing is ever resent.
    """
    if event_type in PROVIDER_EVENTS_SENT:
        status, error_type = Notification.Status.SENT, ""
    elif event_type in PROVIDER_EVENTS_FAILED:
        status, error_type = Notification.Status.FAILED, f"provider_{event_type}"
    else:
        return None
    notification_uuid = _uuid_or_none(notification_id)
    if notification_uuid is not None:
        match = Q(id=notification_uuid)
    elif message_id:
        match = Q(message_id=message_id)
    else:
        return None
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(of=("self",))
            .filter(match, channel=Channel.EMAIL, status=Notification.Status.SENDING)
            .first()
        )
        if notification is None:
            return None
        logger.warning("notification email settled from a provider event: notification=%s event=%s", notification.id, event_type)
        return _email_outcome_record(notification, status, error_type=error_type)


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _audit(notification: Notification, *, uow: UnitOfWork | None = None, subjects: dict | None = None) -> None:
    action = {
        Notification.Status.SENT: "notification.sent",
        Notification.Status.SUPPRESSED: "notification.suppressed",
        Notification.Status.FAILED: "notification.failed",
    }[notification.status]
    own = {"user": str(notification.user_id), "notification": str(notification.id)}
    audit_entry_append(
        action=action,
        event_id=notification.event_id,
        data={
            "channel": notification.channel,
            "template": notification.template,
            "category": notification.category,
            "reason": notification.reason or notification.error_type or None,
        },
        subjects=subjects_merge(subjects, own) if subjects else own,
        dedup_key=f"notification:{notification.id}:{notification.status}",
        uow=uow,
    )


# --- Preferences -------------------------------------------------------------------------------------


@transaction.atomic
def notification_preferences_update(*, user, preferences: dict[str, dict[str, bool]], actor: str, source: str = "api") -> dict[str, dict[str, bool]]:
    """Apply a partial or full category × channel matrix; returns the effective matrix.

    Every key is validated before anything is written. Only cells whose effective value changes are
    written and audited (`preferences.changed`), so repeating a request changes nothing.
    """
    for category, channels in preferences.items():
        if category not in Category.values:
            raise UnknownCategory(f"unknown notification category {category!r}", extra={"category": category})
        for channel in channels:
            if channel not in Channel.values:
                raise UnknownChannel(f"unknown notification channel {channel!r}", extra={"channel": channel})

    # Serialises concurrent updates of one user's preferences, so "changed" is computed on fresh data.
    get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).first()
    effective = notification_preferences_effective(user_id=user.pk)
    changes = []
    now = timezone.now()
    for category, channels in preferences.items():
        for channel, enabled in channels.items():
            if effective[category][channel] == enabled:
                continue
            NotificationPreference.objects.update_or_create(
                user=user, category=category, channel=channel, defaults={"enabled": enabled, "updated_at": now}
            )
            effective[category][channel] = enabled
            changes.append({"category": category, "channel": channel, "enabled": enabled})
    if changes:
        audit_entry_append(
            action="preferences.changed",
            actor=actor,
            # Whose preferences: the actor may be staff or a service acting for the user.
            data={"user": user.pk, "changes": changes, "source": source},
            subjects={"user": str(user.pk)},
        )
    return effective


# --- Unsubscribe ---------------------------------------------------------------------------------------


def notification_unsubscribe_token(*, user_id: int, category: str) -> str:
    # Its own salt: no other signed value of this project can be replayed as an unsubscribe token.
    # No expiry: RFC 8058 expects the link in an old email to keep working.
    return signing.dumps({"u": user_id, "c": category}, salt=UNSUBSCRIBE_SALT)


def notification_unsubscribe_url(*, user_id: int, category: str) -> str:
    token = notification_unsubscribe_token(user_id=user_id, category=category)
    return settings.PUBLIC_BASE_URL.rstrip("/") + UNSUBSCRIBE_PATH.format(token=token)


def notification_unsubscribe_token_read(*, token: str) -> tuple:
    """(user, category) the token names; InvalidUnsubscribeToken if it is tampered, malformed or
    names a user who no longer exists."""
    try:
        payload = signing.loads(token, salt=UNSUBSCRIBE_SALT)
        user_id, category = int(payload["u"]), str(payload["c"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise InvalidUnsubscribeToken("the unsubscribe link is not valid") from None
    if category not in Category.values:
        raise InvalidUnsubscribeToken("the unsubscribe link is not valid")
    try:
        return notification_user_get(user_id=user_id), category
    except UserNotFound:
        raise InvalidUnsubscribeToken("the unsubscribe link is not valid") from None


def notification_unsubscribe(*, token: str) -> str:
    """Switch off email for the token's category (one click, idempotent). Returns the category."""
    user, category = notification_unsubscribe_token_read(token=token)
    notification_preferences_update(
        user=user, preferences={category: {Channel.EMAIL: False}}, actor="system", source="unsubscribe"
    )
    return category
