import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.api_throttling import anonymous_refusal_throttle_wait
from config.exceptions import ApplicationError


def api_exception_handler(exc, context):
    """Map domain errors to `{"error": code, ...}` and keep DRF's own errors in the same shape."""
    if isinstance(exc, ApplicationError):
        return Response({"error": exc.code, "detail": exc.message, **exc.extra}, status=exc.status_code)
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)) and context.get("request"):
        wait = anonymous_refusal_throttle_wait(context["request"], context.get("view"))
        if wait is not None:
            exc = exceptions.Throttled(wait)
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        # UNAUTHENTICATED_USER is None and token auth sends a WWW-Authenticate header, so DRF
        # answers 401 here rather than 403.
        response = exception_handler(exc, context)
        response.data = {"error": "not_authenticated", "detail": str(exc.detail)}
        return response
    if isinstance(exc, exceptions.Throttled):
        response = exception_handler(exc, context)  # sets Retry-After
        retry_after = math.ceil(exc.wait) if exc.wait is not None else None
        response.data = {"error": "throttled", "detail": "too many requests", "retry_after": retry_after}
        return response
    if isinstance(exc, (DjangoValidationError, OverflowError)):
        # A client's value that passed the filter's parsing but not the model field's conversion
        # (a datetime at the calendar's edge): the request's fault, never a 500.
        return Response({"error": "invalid_parameter", "detail": "a parameter is out of range"}, status=400)
    # DRF converts these two itself, but `exc` would keep Django's class, which has no code.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is not None:
        code = getattr(exc, "default_code", "error")
        response.data = {"error": code, "detail": response.data}
        return response
    return None


__all__ = ["api_exception_handler", "status"]
