import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from webhooks.exceptions import PayloadTooLarge, WebhookError
from webhooks.services import webhook_event_receive
from webhooks.throttling import webhook_refusal_record, webhook_request_admit

logger = logging.getLogger(__name__)


# CSRF does not apply to a provider's server-to-server POST; authenticity comes from the signature.
# The view is not wrapped in ATOMIC_REQUESTS: storing is one autocommitted INSERT, and the answer
# must not be sent before it is durable.
@csrf_exempt
def webhook_receive(request, slug: str):
    if request.method != "POST":
        return JsonResponse({"error": "method_not_allowed"}, status=405, headers={"Allow": "POST"})
    try:
        webhook_request_admit(slug=slug, meta=request.META)
        body = _body_read(request)
        result = webhook_event_receive(slug=slug, body=body, headers=request.headers)
    except WebhookError as exc:
        webhook_refusal_record(meta=request.META, error=exc)
        return JsonResponse({"error": exc.code, **exc.extra}, status=exc.status_code, headers=getattr(exc, "headers", None))
    except (OperationalError, InterfaceError) as exc:
        # Never a 2xx that was not stored: the provider retries later.
        logger.error("webhook not stored, database unavailable: endpoint=%s error=%s", slug, type(exc).__name__)
        return JsonResponse({"error": "unavailable"}, status=503, headers={"Retry-After": "30"})
    status = "accepted" if result.created else "duplicate"
    return JsonResponse({"status": status, "event_id": result.event_id})


def _body_read(request) -> bytes:
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise PayloadTooLarge("the body exceeds WEBHOOK_MAX_BODY_BYTES")
    body = request.body
    if len(body) > limit:
        raise PayloadTooLarge("the body exceeds WEBHOOK_MAX_BODY_BYTES")
    return body
