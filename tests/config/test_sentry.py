"""Sentry receives no personal data: events, transactions and breadcrumbs go through sentry-sdk's
real transport to a local capture server, and the envelopes it receives are scanned."""

import gzip
import json
import logging
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from wsgiref.util import setup_testing_defaults

import pytest
import sentry_sdk
from celery.app import trace as celery_trace
from django.contrib.auth import get_user_model

from config.sentry import breadcrumb_scrub, sentry_options, url_scrub
from fulfillment.exceptions import PriceNotInCatalog
from fulfillment.services import catalog_import
from notifications.services import notification_unsubscribe_token
from notifications.tasks import notification_emails_queued_deliver
from tests.audit.pii import PII_EMAIL, PII_IP, PII_SHAPES, assert_no_pii, pii_note
from tests.conftest import as_client_headers, signed_headers
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import CATALOG
from tests.support.embedded_worker import embedded_worker
from tests.support.processes import wait_for
from webhooks.models import WebhookEvent
from webhooks.relay import outbox_relay_once

pytestmark = pytest.mark.integration


class _Capture(BaseHTTPRequestHandler):
    envelopes: list[bytes]

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        assert encoding in ("", "gzip", "deflate"), encoding
        assert self.path.startswith("/api/1/envelope/"), self.path
        self.server.envelopes.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def capture_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.envelopes = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def sentry_live(capture_server):
    """sentry_sdk initialised as config/settings.py does, sending to the capture server; the
    client is closed and removed afterwards so that other tests run without Sentry."""
    port = capture_server.server_address[1]
    sentry_sdk.init(dsn=f"http://public@127.0.0.1:{port}/1", traces_sample_rate=1.0, **sentry_options())
    try:
        yield capture_server
    finally:
        sentry_sdk.flush(timeout=10)
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def _items(envelopes: list[bytes]) -> list[dict]:
    """Every JSON line of every envelope (headers and payloads)."""
    items = []
    for envelope in envelopes:
        for line in envelope.split(b"\n"):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError:
                    items.append({"raw": line.decode("utf-8", "replace")})
    return items


def _strings(value):
    """Every key and string value, decoded (a scan of the raw JSON would miss escaped quotes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


def _wsgi(method: str, path: str, *, query: str = "", headers: dict | None = None) -> int:
    """One request through Django's real WSGI handler (which Sentry's integration wraps)."""
    from django.core.wsgi import get_wsgi_application

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "wsgi.input": BytesIO(b"")}
    environ.update({"HTTP_" + name.upper().replace("-", "_"): value for name, value in (headers or {}).items()})
    setup_testing_defaults(environ)
    status = []
    response = get_wsgi_application()(environ, lambda line, _headers, exc_info=None: status.append(line))
    b"".join(response)
    response.close()
    return int(status[0].split()[0])


def test_url_scrub_keeps_the_route_and_drops_tokens_query_and_credentials():
    url = "https://user:pw@example.com/notifications/unsubscribe/eyJ1IjoxLCJjIjoiYmlsbGluZyJ9:1tXy:abc/?email=a@b.co#x"
    assert url_scrub(url) == "https://example.com/notifications/unsubscribe/[token]/"
    crumb = breadcrumb_scrub({"type": "http", "category": "httplib", "message": f"to {PII_EMAIL}",
                              "data": {"url": url, "method": "GET", "status_code": 200, "body": pii_note()}})
    assert crumb == {"type": "http", "category": "httplib", "message": "to [email]",
                     "data": {"method": "GET", "status_code": 200, "url": "https://example.com/notifications/unsubscribe/[token]/"}}


@pytest.mark.django_db(transaction=True)
def test_nothing_personal_reaches_sentry(sentry_live, monkeypatch):
    user = get_user_model().objects.create_user("carol", email=PII_EMAIL)
    token = notification_unsubscribe_token(user_id=user.id, category="billing")
    path = f"/notifications/unsubscribe/{token}/"
    headers = {"User-Agent": f"Mozilla/5.0 ({PII_EMAIL})", "Referer": f"https://mail.example.com{path}?u={PII_EMAIL}",
               "Cookie": f"sessionid=abc; email={PII_EMAIL}", "X-Forwarded-For": PII_IP, "Authorization": "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"}
    logger = logging.getLogger("payhook.sentry_test")
    logger.setLevel(logging.DEBUG)

    # A transaction of a request to the unsubscribe URL, with personal data in query, headers, cookies.
    assert _wsgi("GET", path, query=f"email={PII_EMAIL}&note=x", headers=headers) == 200
    # A third-party exception carrying personal data, raised inside a view.
    def broken(*, token):
        raise ValueError(f"cannot unsubscribe: {pii_note()}")
    monkeypatch.setattr("notifications.views.notification_unsubscribe", broken)
    assert _wsgi("POST", path, query=f"email={PII_EMAIL}", headers=headers) == 500
    # Log records with personal data in their arguments: a breadcrumb, then an event.
    logger.info("visited %s from %s", PII_EMAIL, PII_IP)
    sentry_sdk.add_breadcrumb(type="http", category="httplib", message=f"GET https://example.com{path}",
                              data={"url": f"https://example.com{path}?email={PII_EMAIL}", "method": "GET", "status_code": 200,
                                    "note": pii_note()})
    logger.error("x %s", PII_EMAIL)
    # Our own error: its message stays, through the detectors.
    try:
        raise PriceNotInCatalog(f"price price_for_{PII_EMAIL} is not in the catalog")
    except PriceNotInCatalog:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=10)

    items = _items(sentry_live.envelopes)
    texts = [text for item in items for text in _strings(item)]
    assert_no_pii(texts, [*PII_SHAPES, token, token.split(":")[0]])

    events = [item for item in items if "event_id" in item and ("exception" in item or "logentry" in item or "spans" in item)]
    transactions = [item for item in events if item.get("type") == "transaction"]
    errors = [item for item in events if item.get("type") != "transaction"]
    # The stream did carry what it should: the scan above is not vacuous.
    assert any(t["request"]["url"].endswith("/notifications/unsubscribe/[token]/") for t in transactions), transactions
    view_error = next(e for e in errors if any(v["type"] == "ValueError" for v in e.get("exception", {}).get("values", [])))
    assert [v["value"] for v in view_error["exception"]["values"] if v["type"] == "ValueError"] == ["[withheld]"]
    assert view_error["request"]["url"].endswith("/notifications/unsubscribe/[token]/")
    assert set(view_error["request"].get("headers", {})) <= {"Content-Type", "Content-Length", "Accept", "Host"}
    assert "user" not in view_error or set(view_error["user"]) == {"id"}
    log_error = next(e for e in errors if e.get("logentry", {}).get("message") == "x %s")
    assert log_error["logentry"] == {"message": "x %s"}
    crumbs = log_error["breadcrumbs"]["values"]
    assert {"message": "visited %s from %s"}.items() <= crumbs[-2].items() or any(c.get("message") == "visited %s from %s" for c in crumbs)
    http_crumb = next(c for c in crumbs if c.get("type") == "http")
    assert http_crumb["data"] == {"url": "https://example.com/notifications/unsubscribe/[token]/", "method": "GET", "status_code": 200}
    own = next(e for e in errors if any(v["type"] == "PriceNotInCatalog" for v in e.get("exception", {}).get("values", [])))
    assert own["exception"]["values"][-1]["value"] == "price [email] is not in the catalog"
    for event in events:
        for value in event.get("exception", {}).get("values", []):
            for frame in value.get("stacktrace", {}).get("frames", []):
                assert not {"vars", "context_line", "pre_context", "post_context"} & set(frame)


def _errors_of(envelopes, error_type: str) -> list[dict]:
    return [item for item in _items(envelopes) if any(v.get("type") == error_type for v in item.get("exception", {}).get("values", []))]


@pytest.mark.django_db(transaction=True)
def test_errors_in_celery_tasks_of_a_real_worker_reach_sentry_without_personal_data(
    sentry_live, monkeypatch, settings, client, stripe_endpoint, stripe_secret, broker_flushed
):
    """A worker (Celery's embedded one, consuming from the test Redis broker in a thread of this
    process, so sentry-sdk's Celery integration runs in it) meets two errors: one escaping a task (the
    integration reports it), and one inside event processing, which is dead-lettered and logged as an
    error (the logging integration reports the record). Both quote personal data; neither arrives."""
    settings.WEBHOOK_RELAY_ENABLED = False
    catalog_import(data=CATALOG)
    user = get_user_model().objects.create_user("carol", email=PII_EMAIL)

    def escaping(**kwargs):
        raise ValueError(f"cannot deliver to {pii_note()}")

    def fulfil_failing(**kwargs):
        raise KeyError(f"no customer for {pii_note()}")

    # sentry-sdk wraps tasks by patching celery.app.trace.build_tracer when it is first initialised; a
    # worker process imports its consumer (which binds that name) later, at start, but this test process
    # imported it at collection, before any init: give the embedded worker the patched function.
    monkeypatch.setattr("celery.worker.consumer.consumer.build_tracer", celery_trace.build_tracer)
    monkeypatch.setattr("notifications.tasks.services.notification_emails_queued_deliver", escaping)
    monkeypatch.setattr("webhooks.processing.canonical_event_fulfil", fulfil_failing)
    event = se.checkout_completed(session_id="cs_sentry", created=1_790_000_000, price_id="price_pro", user_id=user.id,
                                  customer="cus_sentry", payment_intent="pi_sentry", email=PII_EMAIL)
    body = json.dumps(event).encode()
    response = client.generic("POST", f"/webhooks/stripe/?email={PII_EMAIL}", body, content_type="application/json",
                              REMOTE_ADDR=PII_IP, **as_client_headers(signed_headers("stripe", stripe_secret, body)))
    assert response.status_code == 200
    event_id = response.json()["event_id"]

    with embedded_worker():
        assert outbox_relay_once() == 1
        notification_emails_queued_deliver.apply_async(headers={"note": pii_note()})

        def arrived():
            sentry_sdk.flush(timeout=2)
            return _errors_of(sentry_live.envelopes, "ValueError") and any(
                item.get("logentry", {}).get("message", "").startswith("event processing failed permanently")
                for item in _items(sentry_live.envelopes))

        wait_for(arrived, timeout=60, message="both task errors in Sentry")
    assert WebhookEvent.objects.get(id=event_id).status == "dead"

    items = _items(sentry_live.envelopes)
    assert_no_pii([text for item in items for text in _strings(item)], [*PII_SHAPES, "cs_sentry"])
    [escaped] = _errors_of(sentry_live.envelopes, "ValueError")
    value = next(v for v in escaped["exception"]["values"] if v["type"] == "ValueError")
    assert value["value"] == "[withheld]" and value["mechanism"]["type"] == "celery"
    assert escaped["transaction"] == "notifications.tasks.notification_emails_queued_deliver"
    assert "extra" not in escaped  # the task's arguments and headers went with it
    logged = next(item for item in items if item.get("logentry", {}).get("message", "").startswith("event processing failed"))
    assert logged["logentry"] == {"message": "event processing failed permanently"}
