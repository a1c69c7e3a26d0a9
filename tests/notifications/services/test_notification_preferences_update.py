import pytest

from notifications.exceptions import UnknownCategory, UnknownChannel
from notifications.models import PREFERENCE_DEFAULTS, Category, Channel, NotificationPreference
from notifications.selectors import notification_preferences_effective
from notifications.services import notification_preferences_update
from tests.notifications.factories import NotificationPreferenceFactory

pytestmark = pytest.mark.django_db

DEFAULT_MATRIX = {
    "billing": {"email": True, "in_app": True},
    "access": {"email": True, "in_app": True},
    "product_updates": {"email": False, "in_app": True},
}


def test_every_category_and_channel_has_a_default():
    assert set(PREFERENCE_DEFAULTS) == {(category, channel) for category in Category.values for channel in Channel.values}


def test_a_user_without_choices_gets_the_defaults(user):
    assert notification_preferences_effective(user_id=user.pk) == DEFAULT_MATRIX


def test_explicit_choices_override_the_defaults(user):
    NotificationPreferenceFactory(user=user, category="product_updates", channel="email", enabled=True)
    NotificationPreferenceFactory(user=user, category="billing", channel="in_app", enabled=False)
    matrix = notification_preferences_effective(user_id=user.pk)
    assert matrix["product_updates"]["email"] is True
    assert matrix["billing"]["in_app"] is False
    assert matrix["access"] == DEFAULT_MATRIX["access"]


def test_it_writes_and_audits_only_what_changes(user, audit_calls):
    matrix = notification_preferences_update(
        user=user, preferences={"access": {"email": False, "in_app": True}}, actor="42"
    )
    assert matrix["access"] == {"email": False, "in_app": True}
    assert list(NotificationPreference.objects.values_list("category", "channel", "enabled")) == [("access", "email", False)]
    assert audit_calls == [
        {
            "action": "preferences.changed",
            "actor": "42",
            "data": {
                "user": user.pk, "changes": [{"category": "access", "channel": "email", "enabled": False}], "source": "api",
            },
            "subjects": {"user": str(user.pk)},
        }
    ]

    notification_preferences_update(user=user, preferences={"access": {"email": False}}, actor="42")
    assert len(audit_calls) == 1


def test_switching_back_to_the_default_value_is_recorded(user):
    notification_preferences_update(user=user, preferences={"access": {"email": False}}, actor="system")
    notification_preferences_update(user=user, preferences={"access": {"email": True}}, actor="system")
    assert NotificationPreference.objects.get(user=user, category="access", channel="email").enabled is True


@pytest.mark.parametrize(
    "preferences, error",
    [({"marketing": {"email": False}}, UnknownCategory), ({"access": {"sms": False}}, UnknownChannel)],
)
def test_it_validates_everything_before_writing_anything(user, preferences, error):
    with pytest.raises(error):
        notification_preferences_update(user=user, preferences={"billing": {"email": False}, **preferences}, actor="system")
    assert NotificationPreference.objects.count() == 0


def test_a_change_made_by_staff_names_whose_preferences_changed_and_who_changed_them(user):
    from audit.models import AuditEntry

    notification_preferences_update(user=user, preferences={"billing": {"email": False}}, actor="99", source="admin")

    entry = AuditEntry.objects.get(action="preferences.changed")
    assert (entry.actor, entry.data["user"], entry.data["source"]) == ("99", user.pk, "admin")
    assert [subject.kind for subject in entry.subjects.all()] == ["user"]
