import hmac
import ipaddress

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST

from config.metrics import metrics_exposition


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = type(exc).__name__
    try:
        # A fresh connection, not one from Celery's pool: the question is whether the broker answers now.
        with Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                        connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = type(exc).__name__
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def _metrics_allowed(request) -> bool:
    """With METRICS_TOKEN: `Authorization: Bearer <token>`, compared in constant time. Without it,
    only a scraper on the same host (the direct peer is a loopback address; X-Forwarded-For is not
    read, so a request relayed by a proxy on the same host is refused unless that proxy refuses it first)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics(request):
    if not _metrics_allowed(request):
        response = JsonResponse({"error": "metrics_forbidden"}, status=401 if settings.METRICS_TOKEN else 403)
        if settings.METRICS_TOKEN:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)
