"""Rows for the failure-path tests: stored events, dead letters and staff users."""

import json
import uuid
from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.utils import timezone

from config import encryption
from config.ids import uuid7
from webhooks.models import DeadLetter, WebhookEndpoint, WebhookEvent

_BODY = encryption.encrypt(json.dumps({"id": "evt_test", "object": "event"}).encode())
_HEADERS = encryption.encrypt(b"{}")


def event_build(*, endpoint: WebhookEndpoint, status=WebhookEvent.Status.PROCESSED, event_type="invoice.paid",
                received_at=None, provider_event_id=None, body: bytes | None = None) -> WebhookEvent:
    provider_event_id = provider_event_id or f"evt_{uuid.uuid4().hex[:24]}"
    return WebhookEvent(
        id=uuid7(),
        endpoint=endpoint,
        idempotency_key=f"{endpoint.slug}:{provider_event_id}",
        provider_event_id=provider_event_id,
        event_type=event_type,
        status=status,
        content_hash="0" * 64,
        body_encrypted=encryption.encrypt(body) if body is not None else _BODY,
        headers_encrypted=_HEADERS,
        received_at=received_at or timezone.now(),
        attempts=1,
    )


def event_create(**kwargs) -> WebhookEvent:
    event = event_build(**kwargs)
    event.save(force_insert=True)
    return event


def events_create_many(*, endpoint, count: int, **kwargs) -> list[WebhookEvent]:
    base = kwargs.pop("received_at", None) or timezone.now() - timedelta(hours=1)
    events = [event_build(endpoint=endpoint, received_at=base + timedelta(milliseconds=i), **kwargs) for i in range(count)]
    return WebhookEvent.objects.bulk_create(events, batch_size=2000)


def dead_letter_build(*, event: WebhookEvent | None, task_name="webhooks.tasks.webhook_events_process",
                      error_type="UnknownPrice", status=DeadLetter.Status.OPEN, attempts=3, failed_at=None) -> DeadLetter:
    failed_at = failed_at or timezone.now()
    return DeadLetter(
        unit_key=f"{task_name}:{event.id if event else uuid.uuid4().hex}",
        task_name=task_name,
        args=[[str(event.id)]] if event else [],
        event=event,
        error_type=error_type,
        error_message=f"{error_type}: price not in the catalog",
        traceback="Traceback (most recent call last):\n  ...\nUnknownPrice: price not in the catalog",
        attempts=attempts,
        first_failed_at=failed_at,
        last_failed_at=failed_at,
        status=status,
    )


def dead_letter_create(*, endpoint, event_status=WebhookEvent.Status.DEAD, **kwargs) -> DeadLetter:
    event = event_create(endpoint=endpoint, status=event_status)
    row = dead_letter_build(event=event, **kwargs)
    row.save(force_insert=True)
    return row


def staff_user_create(username: str, *groups: str, password: str = "correct-horse-battery-9") -> User:
    user = User.objects.create_user(username=username, password=password, is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user
