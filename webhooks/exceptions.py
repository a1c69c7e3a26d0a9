"""Refusals of the ingestion layer. The provider-level ones (signature, payload, secret) are defined in
providers.exceptions and re-exported here, so a view catches every refusal as a WebhookError."""

from providers.exceptions import (
    InvalidPayload,
    InvalidSecret,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    SignatureError,
    TimestampOutOfTolerance,
    WebhookError,
)

__all__ = [
    "EndpointNotFound", "ForbiddenSource", "IdempotencyConflict", "InvalidPayload", "InvalidSecret", "InvalidSignature",
    "InvalidSource", "MalformedBody", "MalformedSignature", "MissingSignature", "PayloadTooLarge", "RateLimited",
    "SignatureError", "TimestampOutOfTolerance", "UnknownEndpoint", "WebhookError",
]



class UnknownEndpoint(WebhookError):
    code = "unknown_endpoint"
    status_code = 404


class PayloadTooLarge(WebhookError):
    code = "payload_too_large"
    status_code = 413








class IdempotencyConflict(WebhookError):
    code = "idempotency_conflict"
    status_code = 409



class EndpointNotFound(WebhookError):
    code = "endpoint_not_found"
    status_code = 404


class ForbiddenSource(WebhookError):
    code = "forbidden_source"
    status_code = 403


class InvalidSource(WebhookError):
    code = "invalid_source"


class RateLimited(WebhookError):
    code = "rate_limited"
    status_code = 429

    def __init__(self, message: str = "", *, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class MalformedBody(WebhookError):
    """The request's framing could not be read (a broken chunked encoding, a client gone mid-body)."""

    code = "malformed_body"
