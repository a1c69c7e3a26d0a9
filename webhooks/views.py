import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from structlog.contextvars import bind_contextvars

from config import metrics
from config.logs import event_context_bind
from providers.exceptions import ProviderUnavailable, SignatureError
from webhooks.exceptions import (
    ForbiddenSource,
    IdempotencyConflict,
    MalformedBody,
    PayloadTooLarge,
    RateLimited,
    UnknownEndpoint,
    WebhookError,
)
from webhooks.receiving import webhook_event_receive
from webhooks.throttling import webhook_refusal_record, webhook_request_admit

logger = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024


# CSRF does not apply to a provider's server-to-server POST; authenticity comes from the signature.
# The view is not wrapped in ATOMIC_REQUESTS: storing is one autocommitted INSERT, and the answer
# must not be sent before it is durable.
@csrf_exempt
@sensitive_post_parameters()
@sensitive_variables("body")
def webhook_receive(request, slug: str):
    if request.method != "POST":
        return JsonResponse({"error": "method_not_allowed"}, status=405, headers={"Allow": "POST"})
    try:
        webhook_request_admit(slug=slug, meta=request.META)
        # Every later line of this request carries the endpoint (cleared when the request ends,
        # config/logs.py); only once it is known to exist: an unknown slug is the client's text.
        bind_contextvars(endpoint=slug)
        body = _body_read(request)
        result = webhook_event_receive(slug=slug, body=body, headers=request.headers)
    except WebhookError as exc:
        _refusal_count(slug, exc)
        exc = webhook_refusal_record(slug=slug, meta=request.META, error=exc)
        return JsonResponse({"error": exc.code, **exc.extra}, status=exc.status_code, headers=getattr(exc, "headers", None))
    except (OperationalError, InterfaceError) as exc:
        # Never a 2xx that was not stored: the provider retries later.
        logger.error("webhook not stored, database unavailable: endpoint=%s error=%s", slug, type(exc).__name__)
        return JsonResponse({"error": "unavailable"}, status=503, headers={"Retry-After": "30"})
    except ProviderUnavailable:
        logger.error("webhook not stored, the provider's verification material is unreachable: endpoint=%s", slug)
        return JsonResponse({"error": "unavailable"}, status=503, headers={"Retry-After": "30"})
    event_context_bind(event_id=result.event_id)
    if result.answer is not None:  # the provider expects its own body (Adyen: `[accepted]`)
        return HttpResponse(result.answer, content_type="text/plain; charset=utf-8")
    status = "accepted" if result.created else "duplicate"
    return JsonResponse({"status": status, "event_id": result.event_id})


# Counted (and logged) where they are decided: signatures in receiving, limits and allowlists in
# throttling; a conflict is an outcome of a verified delivery (payhook_webhook_events_total).
_COUNTED_ELSEWHERE = (SignatureError, RateLimited, ForbiddenSource, IdempotencyConflict)


def _refusal_count(slug: str, error: WebhookError) -> None:
    """Every other refusal (unknown slug, oversized or unreadable body, invalid payload) is counted
    and logged here, once, by its code; an unknown slug is counted under "": an attacker chooses it."""
    if isinstance(error, _COUNTED_ELSEWHERE):
        return
    endpoint = "" if isinstance(error, UnknownEndpoint) else slug
    metrics.refused.labels(endpoint=endpoint, reason=error.code).inc()
    logger.warning("webhook refused", extra={"endpoint": endpoint, "reason": error.code})


@sensitive_variables("chunks", "chunk")
def _body_read(request) -> bytes:
    """The raw body, never buffering more than WEBHOOK_MAX_BODY_BYTES + 1 bytes.

    Django's request.body reads CONTENT_LENGTH bytes only, so a chunked delivery (no Content-Length)
    would read empty; the server (gunicorn) decodes chunked framing on wsgi.input itself.
    """
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0  # as Django reads it; gunicorn refuses such a request before we run
    if declared > limit:
        raise PayloadTooLarge("the body exceeds WEBHOOK_MAX_BODY_BYTES")
    if declared:
        stream = request
    elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        stream = request.META["wsgi.input"]
    else:
        return b""
    chunks, size = [], 0
    try:
        while size <= limit:
            chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except Exception as exc:
        # The server's body reader raises its own errors for broken framing (gunicorn's
        # InvalidChunkSize, NoMoreData; Django's UnreadablePostError): the request's fault, not ours.
        logger.warning("webhook body unreadable: error=%s", type(exc).__name__)
        raise MalformedBody("the request body could not be read") from None
    if size > limit:
        raise PayloadTooLarge("the body exceeds WEBHOOK_MAX_BODY_BYTES")
    if declared and size < declared:
        # The client closed before sending what it declared: an incomplete request, not a delivery.
        raise MalformedBody("the request body is shorter than its Content-Length")
    return b"".join(chunks)
