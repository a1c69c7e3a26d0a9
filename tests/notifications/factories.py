import uuid

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from factory.django import DjangoModelFactory

from notifications.models import Category, Channel, Notification, NotificationPreference


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}.private@example.com")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        # UserFactory(groups=["operators"]): the groups exist after migrate.
        if create and extracted:
            self.groups.add(*Group.objects.filter(name__in=extracted))


class NotificationFactory(DjangoModelFactory):
    class Meta:
        model = Notification

    event_id = factory.LazyFunction(uuid.uuid4)
    user = factory.SubFactory(UserFactory)
    channel = Channel.IN_APP
    template = "access_granted"
    category = Category.ACCESS
    status = Notification.Status.SENT
    subject = "Your access is ready"
    body = "You now have access to pro."
    context = factory.LazyFunction(lambda: {"entitlements": ["pro"]})


class NotificationPreferenceFactory(DjangoModelFactory):
    class Meta:
        model = NotificationPreference

    user = factory.SubFactory(UserFactory)
    category = Category.ACCESS
    channel = Channel.EMAIL
    enabled = False
