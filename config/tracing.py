"""Traces (OpenTelemetry): one trace from a webhook request through the outbox to every task it causes.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then nothing of OpenTelemetry is even imported, and
every helper below returns at its first line (the request's hot path pays one global lookup).

On, each process (web: config/wsgi.py; worker: config/celery_app.py) gets a TracerProvider with
`service.name` = OTEL_SERVICE_NAME, a BatchSpanProcessor and an OTLP/HTTP (protobuf) exporter, and
instruments Django (the request span), psycopg 3 (a span per statement), Celery (publish and run
spans, the context carried in the message headers) and Django's e-mail sending. The providers are
this module's own, never the global one, so a test can turn tracing on and off again.

The outbox breaks the chain a request would otherwise hand to Celery: the request stores the event
and returns, a relay publishes it later from another process. So the request stores its W3C
`traceparent` with the event (`WebhookEvent.traceparent`), and the relay and the sweep start each
publish span as a child of it (`publish_scope`): Celery's instrumentation then puts that context in
the message, and the task, the event's processing, its statements and its e-mails join the
request's trace. Events of different traces go in different messages (`events_by_trace`).

Spans carry ids only: `payhook.correlation_id` (the stored event's id, as in the canonical events'
`correlationid`), `payhook.event_id`, `payhook.endpoint`. What the instrumentations record is cut to
an allow-list before export (`_span_scrub`): no client address, user agent, Host header, query
string or exception message ever leaves, and paths and statements pass the same scrubbers as Sentry.
"""

import contextlib
import os
import threading

from django.conf import settings

from config.sentry import path_scrub, text_scrub, url_scrub

CORRELATION_ID = "payhook.correlation_id"
EVENT_ID = "payhook.event_id"
EVENT_IDS = "payhook.event_ids"
ENDPOINT = "payhook.endpoint"

_OFF = contextlib.nullcontext()
_lock = threading.Lock()
_state = None  # a _Tracing while tracing is on in this process

# --- What a span may carry (an allow-list, as config/sentry.py's) ------------------------------------
# Attributes that say what ran and how it ended, never who asked or with what. Everything else an
# instrumentation records is dropped: client address and port, user agent, Host header, query string
# (URLs and paths are kept without it), a retry's reason (an exception's text), header captures.
_KEPT = frozenset({
    # HTTP server, old and stable semantic conventions
    "http.method", "http.request.method", "http.route", "http.status_code", "http.response.status_code",
    "http.scheme", "url.scheme", "http.flavor", "network.protocol.version", "net.host.port", "server.port",
    # the database: which one and the statement (Django sends values as parameters, never in the text)
    "db.system", "db.system.name", "db.name", "db.namespace", "db.user", "db.statement", "db.query.text",
    "db.operation.name",
    # e-mail sending (below): a count, never an address
    "payhook.email.recipients",
})
_KEPT_PREFIXES = ("payhook.", "celery.", "messaging.")  # ids and Celery's own routing facts
_DROPPED = frozenset({"celery.retry.reason"})  # str() of an exception
# Database spans may also name the server they talk to; a request's "peer" is its client.
_KEPT_DB = frozenset({"net.peer.name", "net.peer.port", "server.address"})
_PATHS = frozenset({"http.target", "url.path"})  # kept as a path: no query, tokens replaced
# Kept without credentials, query or fragment, tokens replaced. Its host is one of ALLOWED_HOSTS: the
# middleware builds the URL with `request.get_host()`, which refuses any other Host header.
_URLS = frozenset({"http.url", "url.full"})
_SCRUBBED = frozenset({"db.statement", "db.query.text"})  # the detectors' second net


def _attribute_scrub(key: str, value, database: bool):
    if key in _PATHS:
        return path_scrub(str(value).split("?", 1)[0])
    if key in _URLS:
        return url_scrub(value)
    if key in _DROPPED or not (key in _KEPT or key.startswith(_KEPT_PREFIXES) or (database and key in _KEPT_DB)):
        return None
    if key in _SCRUBBED:
        return text_scrub(value)
    return value


def _attributes_scrub(attributes) -> dict:
    attributes = dict(attributes or {})
    database = "db.system" in attributes or "db.system.name" in attributes
    kept = {}
    for key, value in attributes.items():
        value = _attribute_scrub(key, value, database)
        if value is not None:
            kept[key] = value
    return kept


def _span_scrub(span):
    """A copy of a finished span with only what may leave: attributes by allow-list, exception
    events reduced to the exception's type, the status without its description (an exception's text)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, Status

    events = [
        Event(event.name, {key: event.attributes[key] for key in ("exception.type", "exception.escaped")
                           if event.attributes and key in event.attributes}, event.timestamp)
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_attributes_scrub(span.attributes),
        events=events,
        links=[Link(link.context) for link in span.links],
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _exporter_scrubbing(exporter):
    """Wrap `exporter` so that it only ever sees scrubbed copies of the spans."""
    from opentelemetry.sdk.trace.export import SpanExporter

    class ScrubbingSpanExporter(SpanExporter):
        def export(self, spans):
            return exporter.export([_span_scrub(span) for span in spans])

        def shutdown(self):
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return ScrubbingSpanExporter()


def _correlation_processor(context_api, key):
    """Copies the correlation attributes of the enclosing event scope onto every span started in it
    (statements, Celery publishes, e-mails), so one search by event id finds them all."""
    from opentelemetry.sdk.trace import SpanProcessor

    class CorrelationSpanProcessor(SpanProcessor):
        def on_start(self, span, parent_context=None):
            values = context_api.get_value(key, parent_context)
            if values:
                span.set_attributes(values)

    return CorrelationSpanProcessor()


class _EmailInstrumentation:
    """A span around each e-mail Django sends (a client call to the mail server or provider's API),
    with the number of recipients, never an address."""

    def __init__(self, tracer):
        from django.core.mail import EmailMessage
        from opentelemetry.trace import SpanKind

        self._message_class = EmailMessage
        self._original = original = EmailMessage.send

        def send(message, fail_silently=False):
            with tracer.start_as_current_span(
                "email send", kind=SpanKind.CLIENT, attributes={"payhook.email.recipients": len(message.recipients())}
            ):
                return original(message, fail_silently)

        EmailMessage.send = send

    def uninstrument(self) -> None:
        self._message_class.send = self._original


class _Tracing:
    """What `tracing_init` set up in this process, and the API functions the helpers need."""

    def __init__(self, *, provider, tracer, instrumentors, email, correlation_key):
        from opentelemetry import context, propagate, trace

        self.provider, self.tracer, self.instrumentors, self.email = provider, tracer, instrumentors, email
        self.correlation_key = correlation_key
        self.context, self.propagate, self.trace = context, propagate, trace


# --- Turning it on ---------------------------------------------------------------------------------


def tracing_enabled() -> bool:
    return _state is not None


def tracing_init(*, exporter=None) -> bool:
    """Turn tracing on in this process if OTEL_EXPORTER_OTLP_ENDPOINT is set; idempotent. Returns
    whether it is on. `exporter` replaces the OTLP exporter (tests: the SDK's in-memory one).

    Call it before Django builds its middleware chain (config/wsgi.py) and, in a Celery worker, in
    the main process (the relay publishes from there) and in each pool process; a pool process forked
    from an initialised main process inherits the set-up (the SDK restarts its export thread after a
    fork, and the exporter's HTTP session drops the connections it inherited).
    """
    global _state
    if not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        return False
    with _lock:
        if _state is not None:
            return True
        import requests
        from celery import current_app
        from django.apps import apps
        from opentelemetry import context
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            session = requests.Session()  # requests: the OTLP/HTTP exporter's own dependency
            os.register_at_fork(after_in_child=session.close)  # a forked worker opens its own connections
            endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
                settings.OTEL_EXPORTER_OTLP_ENDPOINT.rstrip("/") + "/v1/traces"
            )
            exporter = OTLPSpanExporter(endpoint=endpoint, session=session)
        # The sampler follows OTEL_TRACES_SAMPLER / _ARG (default: parent-based, always on).
        provider = TracerProvider(resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME}))
        correlation_key = context.create_key("payhook.correlation")
        _state = _Tracing(provider=provider, tracer=provider.get_tracer("payhook"), instrumentors=[],
                          email=None, correlation_key=correlation_key)
        provider.add_span_processor(_correlation_processor(context, correlation_key))
        provider.add_span_processor(BatchSpanProcessor(_exporter_scrubbing(exporter)))
        # Second, inside config.errors.JsonErrorMiddleware: that one must still see every answer.
        DjangoInstrumentor().instrument(tracer_provider=provider, middleware_position=1,
                                        excluded_urls="/healthz,/readyz,/metrics")
        PsycopgInstrumentor().instrument(tracer_provider=provider)
        CeleryInstrumentor().instrument(tracer_provider=provider)
        _state.instrumentors = [DjangoInstrumentor(), PsycopgInstrumentor(), CeleryInstrumentor()]
        _state.email = _EmailInstrumentation(_state.tracer)
        if apps.ready:
            # Celery's instrumentation ends a publish span only for a task it finds in the registry:
            # messages name their task (webhooks/outbox.py), so load the task modules in the web process too.
            current_app.loader.import_default_modules()
    return True


def tracing_shutdown() -> None:
    """Flush, stop exporting and undo every instrumentation in this process (tests, clean exits)."""
    global _state
    with _lock:
        state, _state = _state, None
        if state is None:
            return
        for instrumentor in state.instrumentors:
            instrumentor.uninstrument()
        state.email.uninstrument()
        state.provider.shutdown()


def tracing_flush(timeout_millis: int = 10_000) -> bool:
    """Export what is pending now (tests; the batch processor otherwise exports every few seconds)."""
    return _state.provider.force_flush(timeout_millis) if _state is not None else True


# --- The helpers the outbox path calls (each returns at once when tracing is off) --------------------


def traceparent_current() -> str:
    """The W3C traceparent of the current span ("" when tracing is off or no span is active)."""
    if _state is None:
        return ""
    span_context = _state.trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return ""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def _correlation(*, event_ids=None, event_id=None, endpoint=None) -> dict:
    values = {}
    if event_ids is not None:
        event_ids = [str(each) for each in event_ids]
        values[EVENT_IDS] = event_ids
        if len(event_ids) == 1:
            event_id = event_ids[0]
    if event_id:
        values[EVENT_ID] = values[CORRELATION_ID] = str(event_id)
    if endpoint:
        values[ENDPOINT] = endpoint
    return values


def span_annotate(*, event_id=None, event_ids=None, endpoint=None) -> None:
    """Put the correlation attributes on the current span (the request's, the task's)."""
    if _state is None:
        return
    _state.trace.get_current_span().set_attributes(_correlation(event_ids=event_ids, event_id=event_id, endpoint=endpoint))


def events_by_trace(event_ids: list[str], traceparents: dict[str, str] | None) -> list[tuple[str, list[str]]]:
    """[(traceparent, ids)]: events grouped by the trace they were stored in, first seen first.

    One message carries one trace context, so events of different requests go in different messages
    while tracing is on (and all in one group when it is off: batching is what it was).
    """
    if _state is None or not traceparents:
        return [("", event_ids)]
    groups: dict[str, list[str]] = {}
    for event_id in event_ids:
        groups.setdefault(traceparents.get(event_id) or "", []).append(event_id)
    return list(groups.items())


@contextlib.contextmanager
def _scope(name: str, *, parent_traceparent: str, kind, correlation: dict, link_traceparent: str = ""):
    state = _state
    context_api, trace = state.context, state.trace
    parent = state.propagate.extract({"traceparent": parent_traceparent}) if parent_traceparent else context_api.get_current()
    parent = context_api.set_value(state.correlation_key, correlation, parent)
    links = None
    if link_traceparent:
        linked = trace.get_current_span(state.propagate.extract({"traceparent": link_traceparent})).get_span_context()
        current = trace.get_current_span(parent).get_span_context()
        if linked.is_valid and linked.trace_id != current.trace_id:
            links = [trace.Link(linked)]
    span = state.tracer.start_span(name, context=parent, kind=kind, attributes=correlation, links=links)
    token = context_api.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    except BaseException as exc:
        span.set_attribute("payhook.error_type", type(exc).__name__)
        span.set_status(trace.Status(trace.StatusCode.ERROR))
        raise
    finally:
        context_api.detach(token)
        span.end()


def publish_scope(*, traceparent: str, event_ids: list[str]):
    """The span around publishing events' message(s): a child of the request that stored them (its
    traceparent), so Celery's publish span, the message and the task all join that trace."""
    if _state is None:
        return _OFF
    return _scope("webhook_events publish", parent_traceparent=traceparent, kind=_state.trace.SpanKind.INTERNAL,
                  correlation=_correlation(event_ids=event_ids))


def event_scope(*, event_id: str, endpoint: str = "", traceparent: str = ""):
    """The span around processing one event in a task: every span in it (statements, e-mails, tasks
    it publishes) carries the event's correlation id. An event whose message came from elsewhere
    than its request (a dead letter replayed by an operator) links back to the request's trace."""
    if _state is None:
        return _OFF
    return _scope("webhook_event process", parent_traceparent="", kind=_state.trace.SpanKind.INTERNAL,
                  correlation=_correlation(event_id=event_id, endpoint=endpoint), link_traceparent=traceparent)
