import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from audit.models import AuditEntry
from config.unit_of_work import UnitOfWork
from notifications.exceptions import CategoryMismatch, UnknownCategory, UnknownChannel, UnknownNotificationTemplate
from notifications.models import Notification
from notifications.selectors import notification_stale_sending_list
from notifications.services import notification_emails_queued_deliver, notification_send
from tests.notifications.factories import NotificationPreferenceFactory, UserFactory

pytestmark = pytest.mark.django_db

GRANTED = {"template": "access_granted", "category": "access", "context": {"entitlements": ["pro", "reports"]}}


def send(user, event_id=None, **overrides):
    return notification_send(event_id=event_id or uuid.uuid4(), user=user, **{**GRANTED, **overrides})


def by_channel(notifications):
    return {notification.channel: notification for notification in notifications}


class TestNotificationSend:
    def test_it_sends_email_after_commit_and_stores_in_app_as_sent(self, user, django_capture_on_commit_callbacks, audit_calls):
        with django_capture_on_commit_callbacks(execute=True):
            notifications = by_channel(send(user))
            # Inside the transaction the email is only promised.
            assert notifications["email"].status == Notification.Status.QUEUED
            assert mail.outbox == []

        email, in_app = (Notification.objects.get(pk=notifications[c].pk) for c in ("email", "in_app"))
        assert (email.status, email.reason) == (Notification.Status.SENT, "")
        assert email.sent_at is not None
        assert (in_app.status, in_app.sent_at is not None) == (Notification.Status.SENT, True)
        assert in_app.body == "You now have access to pro, reports.\n"
        assert len(mail.outbox) == 1
        assert mail.outbox[0].to == [user.email]
        assert sorted(call["action"] for call in audit_calls) == ["notification.sent", "notification.sent"]

    def test_it_stores_no_address_and_no_email_body_on_the_row(self, user, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            notifications = send(user, context={"entitlements": ["pro"], "customer_email": user.email, "expires_at": user.email})
        for notification in Notification.objects.filter(pk__in=[n.pk for n in notifications]):
            stored = str(notification.__dict__)
            assert user.email not in stored
            assert "unsubscribe" not in stored
            assert notification.context == {"entitlements": ["pro"]}

    def test_a_redelivered_event_finds_the_rows_and_sends_nothing_more(self, user, django_capture_on_commit_callbacks, audit_calls):
        event_id = uuid.uuid4()
        with django_capture_on_commit_callbacks(execute=True):
            first = send(user, event_id)
        with django_capture_on_commit_callbacks(execute=True) as second_callbacks:
            second = send(user, str(event_id))  # the worker passes the id as a string

        assert [n.pk for n in second] == [n.pk for n in first]
        assert second_callbacks == []
        assert Notification.objects.filter(event_id=event_id).count() == 2
        assert len(mail.outbox) == 1
        assert len(audit_calls) == 2

    def test_another_template_for_the_same_event_is_its_own_notification(self, user, django_capture_on_commit_callbacks):
        event_id = uuid.uuid4()
        with django_capture_on_commit_callbacks(execute=True):
            send(user, event_id)
            send(user, event_id, template="access_revoked", context={"entitlements": ["pro"], "reason": "refunded"})
        assert Notification.objects.filter(event_id=event_id).count() == 4
        assert sorted(m.subject for m in mail.outbox) == ["Your access has ended", "Your access is ready"]

    def test_a_worker_that_died_before_sending_leaves_the_row_queued_and_recovery_sends_it_once(
        self, user, django_capture_on_commit_callbacks, audit_calls, time_machine
    ):
        event_id = uuid.uuid4()
        # The first attempt committed its rows, then the process died before the on_commit send ran.
        with django_capture_on_commit_callbacks(execute=False) as lost:
            send(user, event_id)
        assert len(lost) == 1

        # The broker redelivers the event; processing it again does not mail the user.
        with django_capture_on_commit_callbacks(execute=True) as again:
            notifications = by_channel(send(user, event_id))
        assert again == []
        assert mail.outbox == []
        email = Notification.objects.get(pk=notifications["email"].pk)
        assert email.status == Notification.Status.QUEUED

        # Nothing was handed to the backend, so the recovery task sends it: once.
        assert notification_emails_queued_deliver() == 0  # too recent: its own worker may still send it
        time_machine.move_to(email.created_at + timedelta(minutes=2))
        assert notification_emails_queued_deliver() == 1
        assert notification_emails_queued_deliver() == 0
        assert len(mail.outbox) == 1
        assert Notification.objects.get(pk=email.pk).status == Notification.Status.SENT

    def test_a_worker_that_died_mid_send_leaves_the_row_sending_and_it_is_never_resent(
        self, user, django_capture_on_commit_callbacks, audit_calls, time_machine
    ):
        event_id = uuid.uuid4()
        with django_capture_on_commit_callbacks(execute=False):
            notifications = by_channel(send(user, event_id))
        # Claimed (queued → sending) and handed to the backend; the process died before the outcome.
        Notification.objects.filter(pk=notifications["email"].pk).update(status=Notification.Status.SENDING)

        with django_capture_on_commit_callbacks(execute=True):
            send(user, event_id)
        time_machine.move_to(timezone.now() + timedelta(minutes=16))
        assert notification_emails_queued_deliver() == 0
        assert mail.outbox == []
        email = Notification.objects.get(pk=notifications["email"].pk)
        assert email.status == Notification.Status.SENDING
        assert [call["action"] for call in audit_calls] == ["notification.sent"]  # the in-app one only
        # It is visible to operators once it is old enough to be clearly orphaned.
        assert list(notification_stale_sending_list()) == [email]

    def test_it_suppresses_what_preferences_switch_off_with_the_reason(self, user, django_capture_on_commit_callbacks, audit_calls):
        NotificationPreferenceFactory(user=user, category="access", channel="email", enabled=False)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            notifications = by_channel(send(user))

        assert callbacks == []
        assert mail.outbox == []
        assert (notifications["email"].status, notifications["email"].reason) == ("suppressed", "preference_off")
        assert notifications["in_app"].status == "sent"
        suppressed = [call for call in audit_calls if call["action"] == "notification.suppressed"]
        assert suppressed == [
            {
                "action": "notification.suppressed",
                "event_id": notifications["email"].event_id,
                "data": {"channel": "email", "template": "access_granted", "category": "access", "reason": "preference_off"},
                "subjects": {"user": str(user.pk), "notification": str(notifications["email"].pk)},
                "dedup_key": f"notification:{notifications['email'].pk}:suppressed",
                "uow": None,  # no unit of work: written at once
            }
        ]

    def test_a_switched_off_in_app_channel_is_suppressed_too(self, user):
        NotificationPreferenceFactory(user=user, category="billing", channel="in_app", enabled=False)
        notifications = by_channel(send(user, template="payment_failed", category="billing", context={"amount": 1999, "currency": "usd"}))
        assert (notifications["in_app"].status, notifications["in_app"].reason) == ("suppressed", "preference_off")
        assert notifications["email"].status == "queued"

    @pytest.mark.parametrize("email", ["", "   "])
    def test_a_user_without_an_email_address_gets_in_app_only(self, email, django_capture_on_commit_callbacks):
        user = UserFactory(email=email)
        with django_capture_on_commit_callbacks(execute=True):
            notifications = by_channel(send(user))
        assert (notifications["email"].status, notifications["email"].reason) == ("suppressed", "no_email_address")
        assert notifications["in_app"].status == "sent"
        assert mail.outbox == []

    def test_it_reads_the_address_at_send_time(self, user, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            send(user)
            user.email = "changed.private@example.com"
            user.save(update_fields=["email"])
        assert mail.outbox[0].to == ["changed.private@example.com"]

    def test_it_can_be_limited_to_one_channel(self, user):
        notifications = send(user, channels=("in_app",))
        assert [n.channel for n in notifications] == ["in_app"]

    @pytest.mark.parametrize(
        "overrides, error",
        [
            ({"template": "welcome"}, UnknownNotificationTemplate),
            ({"category": "marketing"}, UnknownCategory),
            ({"category": "billing"}, CategoryMismatch),
            ({"channels": ("sms",)}, UnknownChannel),
        ],
    )
    def test_it_refuses_unknown_templates_categories_and_channels(self, user, overrides, error):
        with pytest.raises(error) as caught:
            send(user, **overrides)
        assert caught.value.permanent is True
        assert Notification.objects.count() == 0


class TestNotificationSendInAUnitOfWork:
    def test_its_emails_and_audit_entries_wait_for_the_flush_then_leave_through_one_hook_after_commit(
        self, user, django_capture_on_commit_callbacks
    ):
        other = UserFactory()
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            hooks = len(connection.run_on_commit)
            uow = UnitOfWork()
            send(user, uow=uow)
            send(other, uow=uow)
            assert (len(connection.run_on_commit), AuditEntry.objects.count()) == (hooks, 0)  # nothing before the flush
            uow.flush()
            assert AuditEntry.objects.filter(action="notification.sent").count() == 2  # the in-app rows
            assert mail.outbox == []

        assert len(callbacks) == 1
        assert sorted(message.to[0] for message in mail.outbox) == sorted([user.email, other.email])
        assert set(Notification.objects.values_list("status", flat=True)) == {Notification.Status.SENT}
