from config.exceptions import ApplicationError


class CanonicalEventInvalid(ApplicationError):
    """A provider's adapter built data its type's schema refuses: a bug or an unexpected payload;
    retrying cannot help, the event becomes a dead letter."""

    code = "canonical_event_invalid"
