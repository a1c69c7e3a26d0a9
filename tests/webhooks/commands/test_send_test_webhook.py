"""`manage.py send_test_webhook SLUG EVENT_TYPE [--url URL]` against a real gunicorn on the test database."""

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.support.processes import free_port, web_start
from webhooks.models import WebhookEvent
from webhooks.receiving import webhook_event_body, webhook_event_headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def web_url(worker_env, broker_flushed, tmp_path):
    web, url = web_start(worker_env, tmp_path / "web.log")
    yield url
    web.stop()


def _send(*args) -> str:
    out = StringIO()
    call_command("send_test_webhook", *args, stdout=out)
    return out.getvalue()


def _accepted_event_id(output: str) -> str:
    match = re.search(r'-> 200 \{"status": "accepted", "event_id": "([0-9a-f-]{36})"\}', output)
    assert match, output
    return match.group(1)


@pytest.mark.integration
def test_it_posts_a_signed_stripe_sample_event_that_gets_stored(web_url, stripe_endpoint, stripe_secret):
    output = _send("stripe", "checkout.session.completed", "--url", f"{web_url}/webhooks/stripe/")

    event = WebhookEvent.objects.get(id=_accepted_event_id(output))
    assert event.endpoint_id == stripe_endpoint.id
    assert event.event_type == "checkout.session.completed"
    assert event.provider_event_id.startswith("evt_")
    assert b'"object": "checkout.session"' in webhook_event_body(event=event)
    assert set(webhook_event_headers(event=event)) == {"Stripe-Signature"}
    assert stripe_secret not in output


@pytest.mark.integration
def test_it_posts_a_signed_standard_webhooks_event_that_gets_stored(web_url, standard_endpoint, standard_secret):
    output = _send("acme", "invoice.paid", "--url", web_url)  # the service's base URL: the command adds the path

    event = WebhookEvent.objects.get(id=_accepted_event_id(output))
    assert event.endpoint_id == standard_endpoint.id
    assert event.event_type == "invoice.paid"
    assert set(webhook_event_headers(event=event)) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert event.idempotency_key == f"acme:{webhook_event_headers(event=event)['webhook-id']}"
    assert standard_secret not in output


@pytest.mark.integration
def test_it_signs_with_a_given_ed25519_private_key_when_the_endpoint_holds_only_public_keys(web_url, ed25519_keys):
    private_key, public_key = ed25519_keys
    call_command("webhook_endpoint", "create", "signed", "--scheme", "standard", "--secret", public_key, stdout=StringIO())

    output = _send("signed", "charge.refunded", "--url", f"{web_url}/webhooks/signed/", "--secret", private_key)

    assert WebhookEvent.objects.filter(id=_accepted_event_id(output), event_type="charge.refunded").exists()


@pytest.mark.integration
def test_a_refusal_by_the_endpoint_is_a_command_error(web_url, stripe_endpoint):
    stripe_endpoint.is_active = False
    stripe_endpoint.save()

    with pytest.raises(CommandError, match="404"):
        _send("stripe", "invoice.paid", "--url", f"{web_url}/webhooks/stripe/")
    assert not WebhookEvent.objects.exists()


def test_an_unreachable_url_is_a_command_error(stripe_endpoint):
    url = f"http://127.0.0.1:{free_port()}/webhooks/stripe/"

    with pytest.raises(CommandError, match="could not reach"):
        _send("stripe", "invoice.paid", "--url", url)


def test_an_unknown_slug_is_a_command_error():
    with pytest.raises(CommandError, match="nope"):
        _send("nope", "invoice.paid", "--url", "http://127.0.0.1:9/webhooks/nope/")


def test_a_stripe_event_type_without_a_sample_is_a_command_error(stripe_endpoint):
    with pytest.raises(CommandError, match="no sample object"):
        _send("stripe", "radar.early_fraud_warning.created", "--url", "http://127.0.0.1:9/webhooks/stripe/")
