import uuid

import pytest
from django.core import mail, signing
from django.test import Client

from notifications.models import NotificationPreference
from notifications.services import notification_preferences_update, notification_send, notification_unsubscribe_token
from tests.notifications.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.notifications.urls")]


def url(token: str) -> str:
    return f"/notifications/unsubscribe/{token}/"


def test_the_link_in_an_email_unsubscribes_that_category_in_one_click(user, settings, django_capture_on_commit_callbacks, audit_calls):
    settings.PUBLIC_BASE_URL = "https://pay.example.net"
    with django_capture_on_commit_callbacks(execute=True):
        notification_send(event_id=uuid.uuid4(), user=user, template="access_granted", category="access", context={})
    link = mail.outbox[0].extra_headers["List-Unsubscribe"].strip("<>").removeprefix("https://pay.example.net")

    # What a mail provider sends for RFC 8058 one-click: a cross-site POST, no CSRF token.
    response = Client(enforce_csrf_checks=True).post(
        link, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 200
    assert b"You are unsubscribed" in response.content
    assert NotificationPreference.objects.get(user=user, category="access", channel="email").enabled is False
    changed = [call for call in audit_calls if call["action"] == "preferences.changed"]
    assert [(call["actor"], call["data"]["source"]) for call in changed] == [("system", "unsubscribe")]

    # The next access notification is suppressed by email and still shown in-app.
    with django_capture_on_commit_callbacks(execute=True):
        later = notification_send(event_id=uuid.uuid4(), user=user, template="access_revoked", category="access", context={})
    assert {(n.channel, n.status, n.reason) for n in later} == {("email", "suppressed", "preference_off"), ("in_app", "sent", "")}
    assert len(mail.outbox) == 1


def test_get_shows_a_confirmation_button_and_changes_nothing(client, user):
    response = client.get(url(notification_unsubscribe_token(user_id=user.pk, category="billing")))
    assert response.status_code == 200
    assert b'<form method="post"' in response.content and b"billing" in response.content
    assert user.email.encode() not in response.content
    assert NotificationPreference.objects.count() == 0


def test_unsubscribing_twice_is_harmless_and_audited_once(client, user, audit_calls):
    token = notification_unsubscribe_token(user_id=user.pk, category="product_updates")
    notification_preferences_update(user=user, preferences={"product_updates": {"email": True}}, actor=str(user.pk))
    assert client.post(url(token)).status_code == 200
    assert client.post(url(token)).status_code == 200
    assert NotificationPreference.objects.get(user=user, category="product_updates", channel="email").enabled is False
    assert [call["actor"] for call in audit_calls] == [str(user.pk), "system"]


@pytest.mark.parametrize(
    "make_token",
    [
        lambda user: notification_unsubscribe_token(user_id=user.pk, category="access")[:-2] + "xx",
        lambda user: signing.dumps({"u": user.pk, "c": "access"}),  # another salt
        lambda user: notification_unsubscribe_token(user_id=user.pk, category="marketing"),
        lambda user: "not-a-token",
        lambda user: notification_unsubscribe_token(user_id=user.pk + 1000, category="access"),  # no such user
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_an_invalid_token_gets_a_400_page_and_changes_nothing(client, user, make_token, method):
    response = getattr(client, method)(url(make_token(user)))
    assert response.status_code == 400
    assert b"This link is not valid" in response.content
    assert NotificationPreference.objects.count() == 0


def test_other_methods_are_refused(client, user):
    assert client.delete(url(notification_unsubscribe_token(user_id=user.pk, category="access"))).status_code == 405


def test_one_users_token_never_touches_another_user(client):
    alice, bob = UserFactory(), UserFactory()
    client.post(url(notification_unsubscribe_token(user_id=alice.pk, category="access")))
    assert not NotificationPreference.objects.filter(user=bob).exists()
    assert NotificationPreference.objects.filter(user=alice).count() == 1
