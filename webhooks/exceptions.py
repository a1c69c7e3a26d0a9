from config.exceptions import ApplicationError


class WebhookError(ApplicationError):
    """A delivery payhook refuses; `code` is the contract's `error` value."""


class UnknownEndpoint(WebhookError):
    code = "unknown_endpoint"
    status_code = 404


class PayloadTooLarge(WebhookError):
    code = "payload_too_large"
    status_code = 413


class SignatureError(WebhookError):
    """Base of the verification failures: nothing is stored for these."""


class MissingSignature(SignatureError):
    code = "missing_signature"


class MalformedSignature(SignatureError):
    code = "malformed_signature"


class InvalidSignature(SignatureError):
    code = "invalid_signature"


class TimestampOutOfTolerance(SignatureError):
    code = "timestamp_out_of_tolerance"


class InvalidPayload(WebhookError):
    code = "invalid_payload"


class IdempotencyConflict(WebhookError):
    code = "idempotency_conflict"
    status_code = 409


class InvalidSecret(WebhookError):
    code = "invalid_secret"


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
