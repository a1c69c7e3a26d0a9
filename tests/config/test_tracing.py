"""Traces (issue 12, item 6): one trace from the webhook request, through the outbox relay and a real
Celery worker consuming from the test Redis broker, to the event's processing and its e-mail — with
ids as attributes and nothing personal in any span; and nothing instrumented when tracing is off.

The worker is Celery's embedded test worker (`celery.contrib.testing.worker.start_worker`, solo pool)
in a thread of this process, so its spans land in the same in-memory exporter as the request's; it
takes real messages from Redis, like the Procfile's worker (not eager mode). Spans are read from the
SDK's `InMemorySpanExporter` placed where the OTLP exporter goes, behind the scrubber: what the test
sees is what a collector would receive.
"""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connections
from django.utils import timezone
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from config import tracing
from fulfillment.services import catalog_import
from notifications.models import Notification
from notifications.services import notification_unsubscribe_token
from tests.audit.pii import PII_EMAIL, PII_IP, PII_SHAPES, assert_no_pii
from tests.conftest import as_client_headers, signed_headers
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import CATALOG
from tests.support.embedded_worker import embedded_worker
from tests.support.processes import wait_for
from webhooks.models import WebhookEvent
from webhooks.outbox import webhook_events_dispatch
from webhooks.relay import outbox_relay_once

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_AGENT = f"Mozilla/5.0 ({PII_EMAIL})"


@pytest.fixture
def exported(settings, transactional_db):
    """Tracing on as config/tracing.py turns it on, with the in-memory exporter in place of OTLP's;
    also a second, unscrubbed exporter, to show the scrubber had something to remove."""
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:9"  # never contacted: the exporter is replaced
    settings.WEBHOOK_RELAY_ENABLED = False  # the test runs the relay itself, below
    exporter, raw = InMemorySpanExporter(), InMemorySpanExporter()
    assert tracing.tracing_init(exporter=exporter)
    tracing._state.provider.add_span_processor(SimpleSpanProcessor(raw))
    connections.close_all()  # connections opened from now on go through the instrumented psycopg
    try:
        yield exporter, raw
    finally:
        tracing.tracing_shutdown()
        connections.close_all()


def _texts(spans) -> list[str]:
    """Everything a span would carry to a collector, as text."""
    texts = []
    for span in spans:
        texts += [span.name, str(span.status.description or "")]
        for attributes in [span.attributes, span.resource.attributes, *(event.attributes for event in span.events)]:
            for key, value in (attributes or {}).items():
                texts += [key, json.dumps(value, default=str) if not isinstance(value, str) else value]
    return texts


def _post(client, stripe_secret, event: dict, **extra):
    body = json.dumps(event).encode()
    return client.generic("POST", f"/webhooks/stripe/?email={PII_EMAIL}", body, content_type="application/json",
                          **as_client_headers(signed_headers("stripe", stripe_secret, body)), **extra), body


@pytest.mark.integration
def test_one_trace_from_the_request_through_the_relay_and_a_real_worker_to_the_email(
    exported, client, stripe_endpoint, stripe_secret, broker_flushed
):
    exporter, raw = exported
    catalog_import(data=CATALOG)
    user = get_user_model().objects.create_user("carol", email=PII_EMAIL)
    token = notification_unsubscribe_token(user_id=user.id, category="billing")
    # A request whose path carries a token and whose query, agent and address are personal.
    assert client.get(f"/notifications/unsubscribe/{token}/?email={PII_EMAIL}", HTTP_USER_AGENT=HOSTILE_AGENT,
                      REMOTE_ADDR=PII_IP).status_code == 200
    event = se.checkout_completed(session_id="cs_trace_5f1c", created=int(time.time()), price_id="price_pro",
                                  user_id=user.id, customer="cus_trace", payment_intent="pi_trace", email=PII_EMAIL)
    response, body = _post(client, stripe_secret, event, HTTP_USER_AGENT=HOSTILE_AGENT, REMOTE_ADDR=PII_IP)
    assert response.status_code == 200, response.content
    event_id = response.json()["event_id"]
    stored = WebhookEvent.objects.get(id=event_id)
    assert stored.traceparent.startswith("00-") and len(stored.traceparent) == 55

    assert outbox_relay_once() == 1  # what the relay thread of a worker's main process does
    with embedded_worker():
        wait_for(lambda: Notification.objects.filter(status="sent").exists(), timeout=60, message="event processed, e-mail sent")
    assert WebhookEvent.objects.get(id=event_id).status == "processed"
    assert [message.to for message in mail.outbox] == [[PII_EMAIL]]
    assert tracing.tracing_flush()
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}

    request = next(s for s in spans if s.kind == SpanKind.SERVER and s.attributes.get("payhook.event_id") == event_id)
    trace_id = request.context.trace_id
    assert request.name == "POST webhooks/<slug:slug>/"
    assert request.attributes["payhook.correlation_id"] == event_id and request.attributes["payhook.endpoint"] == "stripe"
    version, stored_trace, stored_parent, flags = stored.traceparent.split("-")
    assert (version, stored_trace, stored_parent) == ("00", f"{trace_id:032x}", f"{request.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled

    def one(name):
        [span] = [s for s in spans if s.name == name and s.context.trace_id == trace_id]
        return span

    publish = one("webhook_events publish")
    apply_async = one("apply_async/webhooks.tasks.webhook_events_process")
    run = one("run/webhooks.tasks.webhook_events_process")
    process = one("webhook_event process")
    email = one("email send")
    # Parent links: request → publish (from the stored traceparent, in another thread) → Celery's
    # publish → the task in the worker → the event → its e-mail (after the commit, in the same task).
    assert publish.parent.span_id == request.context.span_id
    assert apply_async.parent.span_id == publish.context.span_id
    assert run.parent.span_id == apply_async.context.span_id and run.kind == SpanKind.CONSUMER
    assert process.parent.span_id == run.context.span_id
    ancestor = by_id[email.parent.span_id]
    while ancestor.context.span_id != process.context.span_id:
        ancestor = by_id[ancestor.parent.span_id]
    for span in (publish, apply_async, run, process, email):
        assert span.attributes["payhook.correlation_id"] == event_id, span.name
        assert span.attributes["payhook.event_id"] == event_id, span.name
    assert process.attributes["payhook.endpoint"] == "stripe"
    assert email.attributes["payhook.email.recipients"] == 1
    # The worker's statements (lease, claim, fulfilment, audit, the e-mail's claim) are in the trace
    # and carry the correlation id; and every span that names the event is in this one trace.
    worker_sql = [s for s in spans if s.attributes.get("db.system") == "postgresql" and s.context.trace_id == trace_id
                  and s.attributes.get("payhook.correlation_id") == event_id]
    assert len(worker_sql) >= 5 and any("notifications_notification" in s.attributes["db.statement"] for s in worker_sql)
    assert {s.context.trace_id for s in spans if event_id in s.attributes.get("payhook.event_ids", ()) or
            s.attributes.get("payhook.correlation_id") == event_id} == {trace_id}
    request_sql = [s for s in spans if s.parent and s.parent.span_id == request.context.span_id and s.attributes.get("db.system")]
    assert any(s.attributes["db.statement"].startswith("WITH owner AS") for s in request_sql)  # the INSERT

    # Nothing personal, no body, no token, no query string in any span; the raw spans had them (the
    # scan is not vacuous: the scrubber removed the client's address and agent, the query, the token).
    texts = _texts(spans)
    assert_no_pii(texts, [*PII_SHAPES, token, token.split(":")[0], "cs_trace_5f1c", body.decode()[:40]])
    raw_texts = _texts(raw.get_finished_spans())
    assert any(PII_IP in text for text in raw_texts) and any(PII_EMAIL in text for text in raw_texts)
    assert any(token.split(":")[0] in text for text in raw_texts)
    unsubscribe = next(s for s in spans if s.name == "GET notifications/unsubscribe/<str:token>/")
    assert unsubscribe.attributes["http.url"] == "http://testserver/notifications/unsubscribe/[token]/"
    assert request.attributes["http.url"] == "http://testserver/webhooks/stripe/"
    assert not {"net.peer.ip", "client.address", "http.user_agent", "user_agent.original", "http.host", "url.query"} & {
        key for span in spans for key in span.attributes}


@pytest.mark.integration
def test_events_of_two_requests_are_published_in_two_messages_each_in_its_own_trace(exported, client, stripe_endpoint,
                                                                                    stripe_secret, broker_flushed):
    exporter, _ = exported
    ids = []
    for index in range(2):
        event = se.checkout_completed(session_id=f"cs_two_{index}", created=int(time.time()), price_id="price_pro",
                                      payment_intent=f"pi_two_{index}", email=PII_EMAIL)
        response, _ = _post(client, stripe_secret, event)
        ids.append(response.json()["event_id"])

    assert outbox_relay_once() == 2
    assert tracing.tracing_flush()
    spans = exporter.get_finished_spans()
    publishes = [s for s in spans if s.name == "webhook_events publish"]
    assert sorted(s.attributes["payhook.correlation_id"] for s in publishes) == sorted(ids)
    for publish in publishes:
        stored = WebhookEvent.objects.get(id=publish.attributes["payhook.correlation_id"])
        assert stored.traceparent.split("-")[1:3] == [f"{publish.context.trace_id:032x}", f"{publish.parent.span_id:016x}"]
        [message] = [s for s in spans if s.name.startswith("apply_async/") and s.parent.span_id == publish.context.span_id]
        assert message.attributes["payhook.correlation_id"] == publish.attributes["payhook.correlation_id"]
    assert publishes[0].context.trace_id != publishes[1].context.trace_id


@pytest.mark.integration
def test_an_event_the_sweep_republishes_joins_the_trace_of_its_request(exported, client, stripe_endpoint, stripe_secret,
                                                                       broker_flushed):
    exporter, _ = exported
    event = se.checkout_completed(session_id="cs_swept", created=int(time.time()), price_id="price_pro", email=PII_EMAIL)
    response, _ = _post(client, stripe_secret, event)
    event_id = response.json()["event_id"]
    WebhookEvent.objects.filter(id=event_id).update(received_at=timezone.now() - timedelta(hours=1))  # no relay took it

    assert webhook_events_dispatch() == 1
    assert tracing.tracing_flush()
    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.kind == SpanKind.SERVER and s.attributes.get("payhook.event_id") == event_id)
    [publish] = [s for s in spans if s.name == "webhook_events publish"]
    assert publish.context.trace_id == request.context.trace_id and publish.parent.span_id == request.context.span_id


def test_with_tracing_off_the_event_stores_no_traceparent_and_nothing_is_instrumented(client, stripe_endpoint, stripe_secret, settings):
    assert not settings.OTEL_EXPORTER_OTLP_ENDPOINT and not tracing.tracing_enabled()
    assert tracing.tracing_init() is False
    event = se.checkout_completed(session_id="cs_off", created=int(time.time()), price_id="price_pro", email=PII_EMAIL)
    response, _ = _post(client, stripe_secret, event)
    assert WebhookEvent.objects.get(id=response.json()["event_id"]).traceparent == ""
    assert tracing.events_by_trace(["a", "b"], {"a": "00-1", "b": "00-2"}) == [("", ["a", "b"])]  # batching as before


@pytest.mark.integration
def test_with_the_variable_unset_a_web_and_a_worker_process_load_no_opentelemetry():
    """A fresh process, as the web process and a worker's pool process start: the WSGI application
    and the worker's init hooks run, and OpenTelemetry is never even imported."""
    script = """
import sys
import config.wsgi
from celery.signals import worker_init, worker_process_init
from django.conf import settings
worker_init.send(sender=None)
worker_process_init.send(sender=None)
import psycopg
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
print(loaded, [m for m in settings.MIDDLEWARE if "opentelemetry" in m], hasattr(psycopg.connect, "__wrapped__"))
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False,
                          cwd=str(django_settings.BASE_DIR))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[] [] False"


def test_the_scrubber_keeps_what_ran_and_drops_who_asked_in_either_semantic_convention():
    """The HTTP attributes of OpenTelemetry's stable conventions (OTEL_SEMCONV_STABILITY_OPT_IN=http)
    and captured headers pass the same allow-list as the default ones the worker test sees."""
    server = tracing._attributes_scrub({
        "http.request.method": "GET", "http.route": "notifications/unsubscribe/<str:token>/", "http.response.status_code": 200,
        "url.scheme": "https", "url.path": "/notifications/unsubscribe/eyJ1IjoxfQ:1tXy:abc/", "url.query": f"email={PII_EMAIL}",
        "url.full": f"https://user:pw@payhook.example/notifications/unsubscribe/eyJ1IjoxfQ:1tXy:abc/?email={PII_EMAIL}",
        "client.address": PII_IP, "client.port": 51234, "user_agent.original": HOSTILE_AGENT, "server.address": "payhook.example",
        "net.peer.name": "customer-laptop.example", "http.request.header.stripe_signature": ("t=1,v1=abc",),
        "payhook.endpoint": "stripe",
    })
    assert server == {
        "http.request.method": "GET", "http.route": "notifications/unsubscribe/<str:token>/", "http.response.status_code": 200,
        "url.scheme": "https", "url.path": "/notifications/unsubscribe/[token]/",
        "url.full": "https://payhook.example/notifications/unsubscribe/[token]/", "payhook.endpoint": "stripe",
    }
    database = tracing._attributes_scrub({"db.system": "postgresql", "db.statement": f"SELECT 1 /* {PII_EMAIL} */",
                                          "net.peer.name": "db.internal", "db.user": "payhook_app"})
    assert database == {"db.system": "postgresql", "db.statement": "SELECT 1 /* [email] */", "net.peer.name": "db.internal",
                        "db.user": "payhook_app"}
    assert tracing._attributes_scrub({"celery.task_name": "webhooks.tasks.webhook_events_process",
                                      "celery.retry.reason": f"KeyError('{PII_EMAIL}')"}) == {
        "celery.task_name": "webhooks.tasks.webhook_events_process"}
