class ApplicationError(Exception):
    """Base of payhook's domain errors.

    `code` is the stable, machine-readable name that reaches API clients; `message` is for people
    and must never contain secrets, payloads or personal data. `permanent` tells a task whether
    retrying could help.
    """

    code = "application_error"
    status_code = 400
    permanent = True

    def __init__(self, message: str = "", *, extra: dict | None = None):
        super().__init__(message or self.code)
        self.message = message or self.code
        self.extra = extra or {}
