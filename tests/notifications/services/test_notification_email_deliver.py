import logging
import threading
import uuid

import pytest
from django.core import mail
from django.db import connection, transaction

from notifications.models import Notification
from notifications.services import notification_email_deliver, notification_send
from tests.notifications.factories import NotificationFactory, UserFactory


def send(user, event_id=None, template="access_granted", category="access", context=None):
    return notification_send(
        event_id=event_id or uuid.uuid4(),
        user=user,
        template=template,
        category=category,
        context=context if context is not None else {"entitlements": ["pro"], "expires_at": "2031-03-04T10:00:00+00:00"},
    )


@pytest.mark.django_db
class TestNotificationEmailDeliver:
    def test_the_email_carries_one_click_unsubscribe_headers_and_link(self, user, settings, django_capture_on_commit_callbacks):
        settings.PUBLIC_BASE_URL = "https://pay.example.net/"
        with django_capture_on_commit_callbacks(execute=True):
            send(user)

        (message,) = mail.outbox
        unsubscribe = message.extra_headers["List-Unsubscribe"]
        assert unsubscribe.startswith("<https://pay.example.net/notifications/unsubscribe/") and unsubscribe.endswith("/>")
        assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert unsubscribe[1:-1] in message.body
        assert "You now have access to: pro." in message.body
        assert "4 March 2031" in message.body
        assert message.subject == "Your access is ready"
        html, mimetype = message.alternatives[0]
        assert mimetype == "text/html" and unsubscribe[1:-1] in html

    def test_a_template_without_html_sends_plain_text_only(self, user, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            send(user, template="payment_failed", category="billing", context={"amount": 1999, "currency": "eur"})
        (message,) = mail.outbox
        assert message.alternatives == []
        assert "We could not collect your payment of 19.99 EUR." in message.body

    def test_a_refused_send_is_marked_failed_with_the_type_only_and_not_retried(
        self, user, settings, django_capture_on_commit_callbacks, audit_calls, caplog
    ):
        settings.EMAIL_BACKEND = "tests.notifications.email_backends.RefusingEmailBackend"
        with caplog.at_level(logging.DEBUG), django_capture_on_commit_callbacks(execute=True):
            notifications = send(user)

        email = Notification.objects.get(pk=next(n.pk for n in notifications if n.channel == "email"))
        assert (email.status, email.error_type, email.sent_at) == ("failed", "SMTPRecipientsRefused", None)
        assert user.email not in caplog.text
        assert "SMTPRecipientsRefused" in caplog.text
        failed = [call for call in audit_calls if call["action"] == "notification.failed"]
        assert [call["data"]["reason"] for call in failed] == ["SMTPRecipientsRefused"]
        assert user.email not in str(audit_calls)
        # Nothing resends it: delivering again finds no `sending` row.
        assert notification_email_deliver(notification_id=email.pk) is None

    def test_it_leaves_rows_that_are_no_longer_sending_alone(self):
        notification = NotificationFactory(channel="email", status="sent")
        assert notification_email_deliver(notification_id=notification.pk) is None
        assert mail.outbox == []


@pytest.mark.django_db(transaction=True)
class TestNotificationSendTransactions:
    """Real commits and rollbacks: on_commit callbacks run exactly as in the worker."""

    def test_nothing_is_sent_when_the_event_transaction_rolls_back(self):
        user = UserFactory()
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                send(user)
                raise RuntimeError("fulfilment failed after notifying")
        assert mail.outbox == []
        assert Notification.objects.count() == 0

    def test_concurrent_processing_of_one_event_sends_one_email(self):
        user = UserFactory()
        event_id = uuid.uuid4()
        barrier = threading.Barrier(2)
        errors = []

        def process():
            try:
                barrier.wait(timeout=10)
                with transaction.atomic():
                    send(user, event_id)
            except Exception as exc:  # surfaced by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=process) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert errors == []
        assert Notification.objects.filter(event_id=event_id).count() == 2
        assert len(mail.outbox) == 1
        assert Notification.objects.get(event_id=event_id, channel="email").status == "sent"
