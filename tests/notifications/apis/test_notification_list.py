import pytest

from tests.notifications.factories import NotificationFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/"


def test_anonymous_requests_get_401(api_client_for):
    response = api_client_for(None).get(URL)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


@pytest.mark.parametrize("group", ["operators", "support"])
def test_operators_and_support_read_a_users_notifications_with_reasons(api_client_for, group):
    reader = UserFactory(groups=[group])
    owner = UserFactory()
    sent = NotificationFactory(user=owner)
    suppressed = NotificationFactory(user=owner, channel="email", status="suppressed", reason="preference_off", body="")
    NotificationFactory()  # someone else's

    response = api_client_for(reader).get(URL, {"user": owner.pk})

    assert response.status_code == 200
    results = {row["id"]: row for row in response.json()["results"]}
    assert set(results) == {str(sent.pk), str(suppressed.pk)}
    assert results[str(suppressed.pk)]["status"] == "suppressed"
    assert results[str(suppressed.pk)]["reason"] == "preference_off"
    assert results[str(sent.pk)]["event"] == str(sent.event_id)
    assert results[str(sent.pk)]["user"] == owner.pk
    assert owner.email not in response.content.decode()


def test_it_filters_by_status_channel_and_event(api_client_for, operator):
    owner = UserFactory()
    wanted = NotificationFactory(user=owner, channel="email", status="suppressed", reason="no_email_address")
    NotificationFactory(user=owner, event_id=wanted.event_id)
    client = api_client_for(operator)
    for params in [{"status": "suppressed"}, {"channel": "email"}, {"event": str(wanted.event_id), "channel": "email"}]:
        rows = client.get(URL, {"user": owner.pk, **params}).json()["results"]
        assert [row["id"] for row in rows] == [str(wanted.pk)], params


def test_a_user_reads_their_own_in_app_notifications_but_nobody_elses(api_client_for):
    owner, other = UserFactory(), UserFactory()
    NotificationFactory(user=owner)
    client = api_client_for(owner)
    assert client.get(URL, {"user": owner.pk}).status_code == 200
    assert len(client.get(URL, {"user": owner.pk}).json()["results"]) == 1
    assert client.get(URL, {"user": other.pk}).status_code == 403
    assert client.get(URL).status_code == 403


def test_services_tokens_cannot_read_notifications(api_client_for):
    service = UserFactory(groups=["services"])
    assert api_client_for(service).get(URL, {"user": UserFactory().pk}).status_code == 403


def test_the_list_is_cursor_paginated_newest_first(api_client_for, operator):
    owner = UserFactory()
    rows = [NotificationFactory(user=owner) for _ in range(3)]
    client = api_client_for(operator)

    first = client.get(URL, {"user": owner.pk, "page_size": 2}).json()
    second = client.get(first["next"]).json()

    assert "cursor=" in first["next"]
    seen = [row["id"] for row in first["results"] + second["results"]]
    assert seen == [str(row.pk) for row in sorted(rows, key=lambda r: (r.created_at, r.pk), reverse=True)]
    assert second["next"] is None


def test_a_malformed_user_filter_is_a_400(api_client_for, operator):
    response = api_client_for(operator).get(URL, {"user": "abc"})
    assert response.status_code == 400
