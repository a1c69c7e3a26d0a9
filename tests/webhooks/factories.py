import json
from datetime import timedelta

import factory
from django.utils import timezone

from config import encryption
from providers import scheme_get
from providers.stripe import samples
from webhooks.models import WebhookEndpoint, WebhookEvent


class WebhookEndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookEndpoint
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"endpoint-{n}")
    scheme = "stripe"


class WebhookEventFactory(factory.django.DjangoModelFactory):
    """A stored Stripe event built from Stripe's published sample objects, encrypted like the real ones."""

    class Meta:
        model = WebhookEvent

    class Params:
        payload = factory.LazyAttribute(lambda o: samples.stripe_event(o.event_type, event_id=o.provider_event_id))

    endpoint = factory.SubFactory(WebhookEndpointFactory)
    provider_event_id = factory.Sequence(lambda n: f"evt_test_{n:024d}")
    idempotency_key = factory.LazyAttribute(lambda o: f"{o.endpoint.slug}:{o.provider_event_id}")
    event_type = "invoice.paid"
    status = WebhookEvent.Status.RECEIVED
    content_hash = factory.LazyAttribute(lambda o: scheme_get("stripe").content_hash(o.payload))
    body_encrypted = factory.LazyAttribute(lambda o: encryption.encrypt(json.dumps(o.payload).encode()))
    headers_encrypted = factory.LazyAttribute(
        lambda o: encryption.encrypt(json.dumps({"Stripe-Signature": f"t={o.payload['created']},v1={'0' * 64}"}).encode())
    )
    received_at = factory.Sequence(lambda n: timezone.now() - timedelta(days=1) + timedelta(seconds=n))
