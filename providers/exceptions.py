"""What a provider's check refuses. Each `code` is the contract's `error` value for the answer."""

from config.exceptions import ApplicationError


class WebhookError(ApplicationError):
    """A delivery payhook refuses; `code` is the contract's `error` value."""


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


class InvalidSecret(WebhookError):
    code = "invalid_secret"


class ProviderUnavailable(Exception):
    """Verification needs something of the provider's that cannot be reached now (PayPal's signing
    certificate). Not a refusal: the delivery is answered 503, so the provider retries, and it is not
    counted against the sender as a bad request would be."""
