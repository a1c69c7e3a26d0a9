"""A stored event's body and the headers it was signed with share one encrypted token (issue 13: one
encryption per event, not two); rows stored before, with two tokens, read the same."""

import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from config import encryption
from providers.stripe import samples
from tests.conftest import post_json, signed_headers
from tests.webhooks.factories import WebhookEventFactory
from webhooks import receiving
from webhooks.models import WebhookEvent
from webhooks.receiving import webhook_event_body, webhook_event_headers

pytestmark = pytest.mark.django_db


def _deliver(client, stripe_secret, body: bytes) -> tuple[WebhookEvent, dict]:
    headers = signed_headers("stripe", stripe_secret, body)
    response = post_json(client, "/webhooks/stripe/", body, headers)
    assert response.status_code == 200, response.content
    return WebhookEvent.objects.get(id=response.json()["event_id"]), headers


def test_a_new_event_is_encrypted_once_and_reads_back_body_and_headers(client, stripe_endpoint, stripe_secret, monkeypatch):
    calls = []
    encrypt = encryption.encrypt
    monkeypatch.setattr(encryption, "encrypt", lambda plaintext: calls.append(len(plaintext)) or encrypt(plaintext))
    body = b'  {"z": 1,\n "id": "evt_frame_1", "object": "event", "type": "invoice.paid", "created": 1700000000}\n'

    event, headers = _deliver(client, stripe_secret, body)

    assert len(calls) == 1
    assert bytes(event.headers_encrypted) == b""
    assert webhook_event_body(event=event) == body  # byte for byte, as received
    assert webhook_event_headers(event=event) == headers
    assert body not in bytes(event.body_encrypted)


def test_the_body_reads_without_the_headers_column(client, stripe_endpoint, stripe_secret, django_assert_num_queries):
    body = json.dumps(samples.stripe_event("invoice.paid")).encode()
    stored, _ = _deliver(client, stripe_secret, body)
    event = WebhookEvent.objects.defer("headers_encrypted").get(pk=stored.pk)

    with django_assert_num_queries(0):  # the deferred column is never loaded to tell the formats apart
        assert webhook_event_body(event=event) == body


def test_an_event_stored_with_two_tokens_still_reads():
    event = WebhookEventFactory()
    body = encryption.decrypt(event.body_encrypted)
    headers = json.loads(encryption.decrypt(event.headers_encrypted))

    event.refresh_from_db()
    assert webhook_event_body(event=event) == body
    assert webhook_event_headers(event=event) == headers
    assert body.startswith(b"{") and list(headers) == ["Stripe-Signature"]


def test_a_frame_is_never_confused_with_an_old_body():
    # An old-format body is a JSON text: never four zero bytes first, in any encoding.
    for text in ('{"a": 1}', ' \n{"a": 1}', '\ufeff{"a": 1}'):
        for codec in ("utf-8", "utf-16-be", "utf-16-le", "utf-32-be", "utf-32-le"):
            assert receiving._frame_split(text.encode(codec)) is None, (text, codec)
    frame = receiving._body_and_headers_frame(b'{"a": 1}', {"Stripe-Signature": "t=1,v1=ab"})
    assert receiving._frame_split(frame) == (b'{"a": 1}', b'{"Stripe-Signature":"t=1,v1=ab"}')


def test_key_rotation_re_encrypts_both_formats(settings, client, stripe_endpoint, stripe_secret):
    old_row = WebhookEventFactory()
    old_body, old_headers = webhook_event_body(event=old_row), webhook_event_headers(event=old_row)
    body = json.dumps(samples.stripe_event("invoice.paid")).encode()
    new_row, headers = _deliver(client, stripe_secret, body)
    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    new_key = Fernet.generate_key().decode()
    try:
        settings.FIELD_ENCRYPTION_KEYS = [new_key, *keys]
        encryption.reset_cache()
        call_command("rotate_encryption_keys")
        settings.FIELD_ENCRYPTION_KEYS = [new_key]
        encryption.reset_cache()

        old_row.refresh_from_db()
        new_row.refresh_from_db()
        assert (webhook_event_body(event=old_row), webhook_event_headers(event=old_row)) == (old_body, old_headers)
        assert (webhook_event_body(event=new_row), webhook_event_headers(event=new_row)) == (body, headers)
        assert bytes(new_row.headers_encrypted) == b""
    finally:
        settings.FIELD_ENCRYPTION_KEYS = keys
        encryption.reset_cache()
