"""`manage.py send_test_webhook SLUG EVENT_TYPE` for a Paddle endpoint, against a real gunicorn."""

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.support.processes import web_start
from webhooks.endpoints import webhook_endpoint_create
from webhooks.models import WebhookEvent
from webhooks.receiving import webhook_event_headers

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "pdl_ntfset_01hs0t3tw21j988db1pam5xg8m_GrOWLNef+vmtjJYq4mSnHNzvc8uWoJ1I"


@pytest.fixture
def paddle_endpoint(db):
    return webhook_endpoint_create(slug="paddle", scheme="paddle", secret=SECRET)


@pytest.fixture
def web_url(worker_env, broker_flushed, tmp_path):
    web, url = web_start(worker_env, tmp_path / "web.log")
    yield url
    web.stop()


def _send(*args) -> str:
    out = StringIO()
    call_command("send_test_webhook", *args, stdout=out)
    return out.getvalue()


@pytest.mark.integration
def test_it_posts_a_signed_paddle_sample_event_that_gets_stored(web_url, paddle_endpoint):
    output = _send("paddle", "transaction.completed", "--url", web_url)

    match = re.search(r'-> 200 \{"status": "accepted", "event_id": "([0-9a-f-]{36})"\}', output)
    assert match, output
    event = WebhookEvent.objects.get(id=match.group(1))
    assert event.event_type == "transaction.completed"
    assert event.idempotency_key == f"paddle:{event.provider_event_id}" and event.provider_event_id.startswith("evt_")
    assert set(webhook_event_headers(event=event)) == {"Paddle-Signature"}
    assert SECRET not in output


def test_a_paddle_event_type_without_a_sample_is_a_command_error(paddle_endpoint):
    with pytest.raises(CommandError, match="no sample for Paddle event type"):
        _send("paddle", "payout.paid", "--url", "http://127.0.0.1:9/webhooks/paddle/")
