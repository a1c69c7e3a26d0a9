from datetime import timedelta

import pytest
from django.utils import timezone

from tests.notifications.factories import NotificationFactory, NotificationPreferenceFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_the_stale_sending_filter_shows_only_orphaned_emails(admin_client_logged_in):
    stale = NotificationFactory(channel="email", status="sending", created_at=timezone.now() - timedelta(hours=1))
    fresh = NotificationFactory(channel="email", status="sending")
    sent = NotificationFactory(channel="email", status="sent", created_at=timezone.now() - timedelta(hours=1))

    response = admin_client_logged_in.get("/admin/notifications/notification/", {"delivery": "stale_sending"})

    assert response.status_code == 200
    listed = {row.pk for row in response.context["cl"].result_list}
    assert listed == {stale.pk}
    assert fresh.pk not in listed and sent.pk not in listed


def test_lists_never_show_addresses_or_bodies(admin_client_logged_in):
    notification = NotificationFactory(body="You now have access to secret-body-text.")
    NotificationPreferenceFactory(user=notification.user)

    notifications = admin_client_logged_in.get("/admin/notifications/notification/").content.decode()
    preferences = admin_client_logged_in.get("/admin/notifications/notificationpreference/").content.decode()
    detail = admin_client_logged_in.get(f"/admin/notifications/notification/{notification.pk}/change/").content.decode()

    assert str(notification.event_id) in notifications
    for page in (notifications, preferences, detail):
        assert notification.user.email not in page
        assert notification.user.username not in page
    assert "secret-body-text" not in notifications
