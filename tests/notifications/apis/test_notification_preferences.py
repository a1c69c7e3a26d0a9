import pytest

from notifications.models import NotificationPreference
from tests.notifications.factories import NotificationPreferenceFactory, UserFactory

pytestmark = pytest.mark.django_db


def url(user) -> str:
    return f"/api/v1/users/{user.pk}/notification-preferences/"


DEFAULTS = {
    "billing": {"email": True, "in_app": True},
    "access": {"email": True, "in_app": True},
    "product_updates": {"email": False, "in_app": True},
}


def test_get_returns_the_effective_matrix_with_defaults(api_client_for, user):
    NotificationPreferenceFactory(user=user, category="billing", channel="in_app", enabled=False)
    response = api_client_for(user).get(url(user))
    assert response.status_code == 200
    assert response.json() == {"user": user.pk, "preferences": {**DEFAULTS, "billing": {"email": True, "in_app": False}}}


def test_support_reads_and_changes_anyones_preferences(api_client_for, user):
    client = api_client_for(UserFactory(groups=["support"]))
    assert client.get(url(user)).status_code == 200
    response = client.put(url(user), {"preferences": {"product_updates": {"email": True}}}, format="json")
    assert response.status_code == 200
    assert response.json()["preferences"]["product_updates"] == {"email": True, "in_app": True}


def test_operators_read_but_cannot_change_preferences(api_client_for, user):
    client = api_client_for(UserFactory(groups=["operators"]))
    assert client.get(url(user)).status_code == 200
    response = client.put(url(user), {"preferences": {"product_updates": {"email": True}}}, format="json")
    assert response.status_code == 403
    assert not NotificationPreference.objects.filter(user=user).exists()


def test_a_services_token_cannot_see_even_its_own_preferences_or_notifications(api_client_for):
    service = UserFactory(groups=["services"])
    client = api_client_for(service)
    assert client.get(url(service)).status_code == 403
    assert client.put(url(service), {"preferences": {"access": {"email": False}}}, format="json").status_code == 403
    assert client.get("/api/v1/notifications/", {"user": service.pk}).status_code == 403


def test_put_applies_a_partial_matrix_and_audits_the_acting_user(api_client_for, user, audit_calls):
    response = api_client_for(user).put(url(user), {"preferences": {"access": {"email": False}}}, format="json")

    assert response.status_code == 200
    assert response.json()["preferences"] == {**DEFAULTS, "access": {"email": False, "in_app": True}}
    assert NotificationPreference.objects.get(user=user, category="access", channel="email").enabled is False
    assert [(call["action"], call["actor"]) for call in audit_calls] == [("preferences.changed", str(user.pk))]


def test_put_accepts_the_full_matrix_get_returned(api_client_for, user):
    client = api_client_for(user)
    matrix = client.get(url(user)).json()["preferences"]
    matrix["product_updates"]["in_app"] = False
    response = client.put(url(user), {"preferences": matrix}, format="json")
    assert response.json()["preferences"] == matrix
    assert NotificationPreference.objects.filter(user=user).count() == 1


@pytest.mark.parametrize(
    "body, code",
    [
        ({"preferences": {"marketing": {"email": False}}}, "unknown_category"),
        ({"preferences": {"access": {"sms": False}}}, "unknown_channel"),
        ({"preferences": {"access": {"email": "maybe"}}}, "invalid"),
        ({"preferences": {"access": False}}, "invalid"),
        ({"access": {"email": False}}, "invalid"),
    ],
)
def test_bad_input_is_a_400_with_an_error_code_and_writes_nothing(api_client_for, user, body, code):
    response = api_client_for(user).put(url(user), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert NotificationPreference.objects.count() == 0


def test_a_user_cannot_read_or_change_someone_elses_preferences(api_client_for, user):
    other = UserFactory()
    client = api_client_for(user)
    assert client.get(url(other)).status_code == 403
    assert client.put(url(other), {"preferences": {"access": {"email": False}}}, format="json").status_code == 403
    assert NotificationPreference.objects.count() == 0


def test_services_tokens_are_refused(api_client_for, user):
    assert api_client_for(UserFactory(groups=["services"])).get(url(user)).status_code == 403


def test_anonymous_requests_get_401(api_client_for, user):
    assert api_client_for(None).get(url(user)).status_code == 401
    assert api_client_for(None).put(url(user), {"preferences": {}}, format="json").status_code == 401


def test_an_unknown_user_is_a_404(api_client_for, operator):
    response = api_client_for(operator).get("/api/v1/users/987654/notification-preferences/")
    assert response.status_code == 404
    assert response.json()["error"] == "user_not_found"
