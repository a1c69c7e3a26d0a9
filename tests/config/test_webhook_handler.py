"""The web process's WSGI application (config/handlers.py, served by config/wsgi.py): /webhooks/
through the lean middleware chain, everything else through MIDDLEWARE.

Django's test Client goes through its own ClientHandler with settings.MIDDLEWARE, so it cannot show
what production runs: these tests call the WSGI application itself, as gunicorn does.
"""

import json
import time

import pytest
from django.db import OperationalError, connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from config import handlers, tracing
from providers.stripe import samples
from tests.conftest import as_client_headers, signed_headers
from webhooks import throttling, views
from webhooks.models import WebhookEvent

FULL_CHAIN_ONLY = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "axes.middleware.AxesMiddleware",
)


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes):
        self.status_code = int(status.split(" ", 1)[0])
        self.header_list = headers
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)


def wsgi_call(application, method: str, path: str, body: bytes = b"", **extra) -> Answer:
    """One request through `application` as a WSGI server makes it (environ, start_response, close)."""
    environ = RequestFactory().generic(method, path, body, content_type="application/json", **extra).environ
    started = []

    def start_response(status, headers, exc_info=None):
        started.append((status, headers))

    result = application(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        result.close()  # request_finished, as gunicorn sends it
    return Answer(started[0][0], started[0][1], content)


@pytest.fixture
def app(in_test_transaction):
    return handlers.application_build()


@pytest.fixture(autouse=True)
def _fresh_source_cache():
    throttling.sources_cache_clear()
    yield
    throttling.sources_cache_clear()


def _signed(secret: str, event: dict | None = None) -> tuple[bytes, dict]:
    body = json.dumps(event or samples.stripe_event("invoice.paid")).encode()
    return body, as_client_headers(signed_headers("stripe", secret, body))


def _refused(endpoint: str, reason: str) -> float:
    return REGISTRY.get_sample_value("payhook_webhook_refused_total", {"endpoint": endpoint, "reason": reason}) or 0.0


# --- The chains -------------------------------------------------------------------------------------


def test_the_webhook_chain_keeps_json_errors_security_and_host_checks_and_nothing_else(settings):
    lean = handlers.webhook_middleware()

    assert lean == ["config.errors.JsonErrorMiddleware", "django.middleware.security.SecurityMiddleware",
                    "django.middleware.common.CommonMiddleware"]
    assert not set(FULL_CHAIN_ONLY) & set(lean)
    assert set(FULL_CHAIN_ONLY) <= set(settings.MIDDLEWARE)  # everything else keeps them


def test_a_webhook_middleware_missing_from_middleware_is_a_configuration_error(settings):
    settings.WEBHOOK_MIDDLEWARE = [*settings.WEBHOOK_MIDDLEWARE, "config.nowhere.Middleware"]

    with pytest.raises(ValueError, match="config.nowhere.Middleware"):
        handlers.webhook_middleware()


def test_building_the_lean_handler_leaves_the_middleware_setting_alone(settings):
    before = list(settings.MIDDLEWARE)

    application = handlers.application_build()

    assert settings.MIDDLEWARE == before
    assert isinstance(application.handler_for({"PATH_INFO": "/webhooks/stripe/"}), handlers.WebhookWSGIHandler)
    for path in ("/admin/login/", "/api/v1/events/", "/healthz", "/webhooks", "/notifications/x/"):
        assert not isinstance(application.handler_for({"PATH_INFO": path}), handlers.WebhookWSGIHandler), path


def test_the_web_process_serves_the_dispatching_application():
    import config.wsgi

    assert isinstance(config.wsgi.application, handlers.PathDispatchApplication)


# --- A webhook through the real application ------------------------------------------------------------


@pytest.mark.django_db
def test_a_delivery_gets_no_session_user_csrf_or_messages_and_sets_no_cookie(app, stripe_endpoint, stripe_secret, monkeypatch):
    seen = []
    body_read = views._body_read
    monkeypatch.setattr(views, "_body_read", lambda request: seen.append(request) or body_read(request))
    body, headers = _signed(stripe_secret)

    with CaptureQueriesContext(connection) as queries:
        answer = wsgi_call(app, "POST", "/webhooks/stripe/", body, **headers)

    assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    [request] = seen
    for attribute in ("session", "user", "auser", "_messages", "csrf_processing_done"):
        assert not hasattr(request, attribute), attribute
    assert "CSRF_COOKIE" not in request.META
    assert "set-cookie" not in answer.headers
    assert "x-frame-options" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"  # SecurityMiddleware stays
    assert int(answer.headers["content-length"]) == len(answer.body)  # CommonMiddleware stays
    assert not [q for q in queries.captured_queries if "django_session" in q["sql"] or "axes_" in q["sql"]]
    assert WebhookEvent.objects.count() == 1


@pytest.mark.django_db
def test_a_redelivery_and_a_conflict_answer_as_before(app, stripe_endpoint, stripe_secret):
    event = samples.stripe_event("invoice.paid")
    body, headers = _signed(stripe_secret, event)
    first = wsgi_call(app, "POST", "/webhooks/stripe/", body, **headers)
    again = wsgi_call(app, "POST", "/webhooks/stripe/", body, **headers)
    changed, changed_headers = _signed(stripe_secret, {**event, "type": "invoice.voided"})
    conflict = wsgi_call(app, "POST", "/webhooks/stripe/", changed, **changed_headers)

    assert first.json()["status"] == "accepted"
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    assert conflict.status_code == 409 and conflict.json()["error"] == "idempotency_conflict"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path, body, extra, status, code",
    [
        ("GET", "/webhooks/stripe/", b"", {}, 405, "method_not_allowed"),
        ("POST", "/webhooks/nobody/", b"{}", {}, 404, "unknown_endpoint"),
        ("POST", "/webhooks/a/b/c", b"{}", {}, 404, "unknown_endpoint"),
        ("POST", "/webhooks/stripe/", b"{}", {}, 400, "missing_signature"),
        ("POST", "/webhooks/stripe/", b"{}", {"HTTP_STRIPE_SIGNATURE": "t=1,v1=zz"}, 400, "malformed_signature"),
        ("POST", "/webhooks/stripe/", b"{}", {"HTTP_HOST": "evil.example"}, 400, "bad_request"),
        ("POST", "/webhooks/stripe/", b"{" + b" " * 200 + b"}", {}, 413, "payload_too_large"),
    ],
)
def test_every_refusal_is_the_same_json_answer_through_the_lean_chain(app, stripe_endpoint, settings, method, path, body, extra,
                                                                    status, code):
    settings.WEBHOOK_MAX_BODY_BYTES = 100
    settings.DEBUG = True  # Django's technical pages would show here if the JSON middleware were missing
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False

    answer = wsgi_call(app, method, path, body, **extra)

    assert answer.status_code == status, answer.body[:300]
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == code
    if status == 405:
        assert answer.headers["allow"] == "POST"


@pytest.mark.django_db
def test_a_bad_signature_is_refused_and_counted(app, stripe_endpoint):
    before = REGISTRY.get_sample_value("payhook_webhook_refused_total",
                                       {"endpoint": "stripe", "reason": "invalid_signature"}) or 0.0
    body = json.dumps(samples.stripe_event("invoice.paid")).encode()
    headers = as_client_headers(signed_headers("stripe", "whsec_" + "A" * 44, body))

    answer = wsgi_call(app, "POST", "/webhooks/stripe/", body, **headers)

    assert answer.status_code == 400 and answer.json() == {"error": "invalid_signature"}
    assert (REGISTRY.get_sample_value("payhook_webhook_refused_total",
                                      {"endpoint": "stripe", "reason": "invalid_signature"}) or 0.0) == before + 1
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_refusals_are_counted_through_the_lean_chain(app, stripe_endpoint):
    before = _refused("", "unknown_endpoint")

    wsgi_call(app, "POST", "/webhooks/nobody/", b"{}")

    assert _refused("", "unknown_endpoint") == before + 1


@pytest.mark.django_db
def test_a_source_outside_the_allowlist_is_403(app, stripe_endpoint, stripe_secret):
    stripe_endpoint.allowed_sources = ["203.0.113.0/24"]
    stripe_endpoint.save()
    body, headers = _signed(stripe_secret)

    refused = wsgi_call(app, "POST", "/webhooks/stripe/", body, REMOTE_ADDR="198.51.100.7", **headers)
    accepted = wsgi_call(app, "POST", "/webhooks/stripe/", body, REMOTE_ADDR="203.0.113.9", **headers)

    assert refused.status_code == 403 and refused.json() == {"error": "forbidden_source"}
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"


@pytest.mark.django_db
def test_a_throttled_client_gets_429_with_retry_after(app, settings, monkeypatch):
    monkeypatch.setattr(throttling, "_clock", lambda: 1_800_000_030.0)
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"lean-{time.time_ns()}"}}
    settings.WEBHOOK_RATE_LIMIT_PER_CLIENT = "2/m"

    codes = [wsgi_call(app, "POST", "/webhooks/nobody/", b"{}", REMOTE_ADDR="198.51.100.7") for _ in range(3)]

    assert [a.status_code for a in codes] == [404, 404, 429]
    assert codes[-1].json() == {"error": "rate_limited"} and codes[-1].headers["retry-after"] == "30"


@pytest.mark.django_db
def test_an_unavailable_database_is_a_503_with_retry_after(app, stripe_endpoint, stripe_secret, monkeypatch):
    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(views, "webhook_event_receive", down)
    body, headers = _signed(stripe_secret)

    answer = wsgi_call(app, "POST", "/webhooks/stripe/", body, **headers)

    assert answer.status_code == 503 and answer.json() == {"error": "unavailable"}
    assert answer.headers["retry-after"] == "30"


@pytest.mark.django_db
def test_an_unexpected_error_is_a_json_500_without_the_body_even_under_debug(app, stripe_endpoint, stripe_secret, settings,
                                                                            monkeypatch):
    settings.DEBUG = True
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views, "webhook_event_receive", explode)
    body, headers = _signed(stripe_secret)

    answer = wsgi_call(app, "POST", "/webhooks/stripe/", body, **headers)

    assert answer.status_code == 500 and answer.json() == {"error": "server_error"}
    assert b"boom" not in answer.body and body not in answer.body


# --- Everything else keeps the full chain --------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_keeps_sessions_and_csrf_protection(app):
    page = wsgi_call(app, "GET", "/admin/login/")
    forged = wsgi_call(app, "POST", "/admin/login/", b"username=a&password=b")

    assert page.status_code == 200
    assert any(name.lower() == "set-cookie" and value.strip().startswith("csrftoken=") for name, value in page.header_list)
    assert page.headers["x-frame-options"] == "DENY"
    assert forged.status_code == 403  # no CSRF token: refused before the view


@pytest.mark.django_db
def test_the_api_keeps_its_no_store_answers(app):
    answer = wsgi_call(app, "GET", "/api/v1/events/")

    assert answer.status_code in (401, 403)
    assert answer.headers["cache-control"] == "no-store"


# --- Tracing ------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_tracing_on_a_webhook_request_is_traced_through_the_lean_chain(settings, stripe_endpoint, stripe_secret):
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:9"  # never contacted: the exporter is replaced
    settings.WEBHOOK_RELAY_ENABLED = False
    exporter = InMemorySpanExporter()
    assert tracing.tracing_init(exporter=exporter)
    try:
        assert any(path.startswith("opentelemetry.") for path in handlers.webhook_middleware())
        app = handlers.application_build()  # as config/wsgi.py: after tracing_init()
        body, headers = _signed(stripe_secret)

        answer = wsgi_call(app, "POST", "/webhooks/stripe/", body, **headers)

        assert answer.status_code == 200
        event_id = answer.json()["event_id"]
        assert tracing.tracing_flush()
        [request] = [s for s in exporter.get_finished_spans()
                     if s.kind == SpanKind.SERVER and s.attributes.get("payhook.event_id") == event_id]
        stored = WebhookEvent.objects.get(id=event_id)
        assert stored.traceparent.startswith(f"00-{request.context.trace_id:032x}-{request.context.span_id:016x}-")
    finally:
        tracing.tracing_shutdown()
