"""E-mail leaves a window of NOTIFICATION_EMAIL_SEND_WINDOW messages at a time (claim the window, send,
record the window), so a process that dies mid-send leaves at most a window of rows `sending` (one with
a window of 1); the mail provider's delivery events settle such rows."""

import uuid

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.db import OperationalError

from notifications import services as notification_services
from notifications.models import Notification
from notifications.services import notification_email_provider_event, notification_emails_deliver
from tests.notifications.factories import NotificationFactory, UserFactory


class ProcessDeath(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the send path records an outcome."""


class DiesOnSecondMessage(LocmemBackend):
    sent = 0

    def send_messages(self, messages):
        DiesOnSecondMessage.sent += 1
        if DiesOnSecondMessage.sent == 2:
            raise ProcessDeath()
        return super().send_messages(messages)


def _queued_emails(n: int) -> list[Notification]:
    user = UserFactory()
    return [NotificationFactory(user=user, channel="email", status="queued", event_id=uuid.uuid4()) for _ in range(n)]


def _statuses(rows) -> list[str]:
    return [Notification.objects.get(pk=row.pk).status for row in rows]


@pytest.mark.django_db(transaction=True)
def test_with_a_window_of_one_a_process_dying_mid_send_leaves_one_row_sending_the_rest_queued(settings):
    settings.EMAIL_BACKEND = "tests.notifications.services.test_notification_email_window.DiesOnSecondMessage"
    settings.NOTIFICATION_EMAIL_SEND_WINDOW = 1
    DiesOnSecondMessage.sent = 0
    rows = _queued_emails(3)

    with pytest.raises(ProcessDeath):
        notification_emails_deliver(notification_ids=[row.pk for row in rows])

    # Recorded before the next was claimed; the one on the wire is ambiguous; the last is untouched.
    assert _statuses(rows) == ["sent", "sending", "queued"]
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_a_process_dying_mid_window_leaves_that_window_sending_and_later_windows_queued(settings):
    settings.EMAIL_BACKEND = "tests.notifications.services.test_notification_email_window.DiesOnSecondMessage"
    settings.NOTIFICATION_EMAIL_SEND_WINDOW = 3
    DiesOnSecondMessage.sent = 0
    rows = _queued_emails(5)

    with pytest.raises(ProcessDeath):
        notification_emails_deliver(notification_ids=[row.pk for row in rows])

    # The first window was claimed in one commit; its outcomes were not recorded, so all three stay
    # ambiguous (one left, one was on the wire, one never left) and nothing resends them. The second
    # window was never claimed.
    assert _statuses(rows) == ["sending", "sending", "sending", "queued", "queued"]
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_a_window_is_claimed_and_recorded_in_a_constant_number_of_statements(settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.NOTIFICATION_EMAIL_SEND_WINDOW = 50

    def statements(n: int) -> int:
        rows = _queued_emails(n)
        with CaptureQueriesContext(connection) as captured:
            outcomes = notification_emails_deliver(notification_ids=[row.pk for row in rows])
        assert set(outcomes.values()) == {"sent"} and len(outcomes) == n
        assert _statuses(rows) == ["sent"] * n
        return len(captured.captured_queries)

    # One message at a time cost ~12 statements per e-mail; a window's cost does not grow with it.
    assert statements(20) == statements(5)


@pytest.mark.django_db
def test_the_message_carries_its_message_id_and_the_notification_id_for_the_provider(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "payhook <billing@pay.example.net>"
    [row] = _queued_emails(1)

    assert notification_emails_deliver(notification_ids=[row.pk]) == {str(row.pk): "sent"}

    (message,) = mail.outbox
    row.refresh_from_db()
    assert row.message_id == f"<notification.{row.pk}@pay.example.net>"
    assert message.extra_headers["Message-ID"] == row.message_id
    assert message.anymail_test_params["metadata"] == {"notification_id": str(row.pk)}


@pytest.mark.django_db(transaction=True)
def test_a_database_blip_while_recording_does_not_leave_a_sent_email_ambiguous(monkeypatch, caplog):
    [row] = _queued_emails(1)
    record = notification_services._email_outcomes_record
    failures = iter([OperationalError("server closed the connection unexpectedly")])

    def flaky(*args, **kwargs):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return record(*args, **kwargs)

    monkeypatch.setattr(notification_services, "_email_outcomes_record", flaky)
    monkeypatch.setattr(notification_services, "_RECORD_RETRY_DELAYS", (0.01, 0.01))

    assert notification_emails_deliver(notification_ids=[row.pk]) == {str(row.pk): "sent"}
    assert _statuses([row]) == ["sent"]
    assert len(mail.outbox) == 1
    assert "outcome record will retry" in caplog.text


@pytest.mark.django_db
class TestProviderEvents:
    def _sending(self, **kwargs):
        return NotificationFactory(channel="email", status="sending", message_id=f"<notification.{uuid.uuid4()}@x>", **kwargs)

    def _signal(self, event_type, **kwargs):
        tracking.send(sender=object, event=AnymailTrackingEvent(event_type=event_type, **kwargs), esp_name="Mailgun")

    def test_a_delivery_event_settles_an_ambiguous_row_as_sent_and_audits_it(self, audit_calls):
        row = self._sending()
        self._signal("delivered", message_id="esp-123", metadata={"notification_id": str(row.pk)})

        row.refresh_from_db()
        assert (row.status, row.error_type) == ("sent", "")
        assert row.sent_at is not None
        assert [call["action"] for call in audit_calls] == ["notification.sent"]

    def test_a_bounce_settles_it_as_failed_with_the_provider_s_verdict(self, audit_calls):
        row = self._sending()
        self._signal("bounced", metadata={"notification_id": str(row.pk)})

        row.refresh_from_db()
        assert (row.status, row.error_type) == ("failed", "provider_bounced")
        assert [call["data"]["reason"] for call in audit_calls] == ["provider_bounced"]

    def test_our_message_id_finds_the_row_when_the_provider_returns_no_metadata(self):
        row = self._sending()
        self._signal("sent", message_id=row.message_id)
        assert _statuses([row]) == ["sent"]

    def test_rows_not_sending_and_events_without_a_verdict_change_nothing(self, audit_calls):
        sent = NotificationFactory(channel="email", status="sent")
        ambiguous = self._sending()

        assert notification_email_provider_event(event_type="bounced", notification_id=str(sent.pk)) is None
        assert notification_email_provider_event(event_type="unknown", notification_id=str(ambiguous.pk)) is None
        assert notification_email_provider_event(event_type="delivered", notification_id="not-a-uuid") is None
        assert _statuses([sent, ambiguous]) == ["sent", "sending"]
        assert audit_calls == []
        assert mail.outbox == [], "nothing is ever resent"


@pytest.fixture
def anymail_tracking_mounted(settings):
    """The tracking webhook is mounted only with a webhook secret: reload the URLconfs with one."""
    import importlib

    from django.urls import clear_url_caches

    import config.urls
    import notifications.public_urls

    settings.ANYMAIL = {"WEBHOOK_SECRET": "tracker:s3cret"}
    importlib.reload(notifications.public_urls)
    importlib.reload(config.urls)
    clear_url_caches()
    yield
    settings.ANYMAIL = {}
    importlib.reload(notifications.public_urls)
    importlib.reload(config.urls)
    clear_url_caches()


@pytest.mark.django_db
def test_a_provider_delivery_webhook_settles_the_row_end_to_end(client, anymail_tracking_mounted):
    import base64
    import json

    row = NotificationFactory(channel="email", status="sending", message_id="<notification.x@pay.example.net>")
    payload = {
        "RecordType": "Delivery", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": "someone@example.com",
        "DeliveredAt": "2026-12-02T04:40:00Z", "Metadata": {"notification_id": str(row.pk)}, "Tag": "", "ServerID": 1,
        "Details": "",
    }
    url = "/notifications/anymail/postmark/tracking/"
    auth = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"tracker:s3cret").decode()}

    refused = client.post(url, json.dumps(payload), content_type="application/json")
    assert refused.status_code in (400, 401, 403), "no credentials, no effect"
    assert _statuses([row]) == ["sending"]

    accepted = client.post(url, json.dumps(payload), content_type="application/json", **auth)
    assert accepted.status_code == 200
    assert _statuses([row]) == ["sent"]
