"""Sentry hook: nothing that could carry a payload, a secret or personal data leaves the process."""

_DROP_REQUEST_KEYS = ("data", "cookies", "headers", "query_string", "env")


def sentry_before_send(event, hint):
    request = event.get("request")
    if isinstance(request, dict):
        for key in _DROP_REQUEST_KEYS:
            request.pop(key, None)
    event.pop("user", None)
    for exception in (event.get("exception") or {}).get("values", []):
        # Exception messages are written to be safe, but a library's message may quote input.
        exception["value"] = exception.get("type", "error")
        for frame in (exception.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    for crumb in (event.get("breadcrumbs") or {}).get("values", []):
        crumb.pop("data", None)
        crumb["message"] = crumb.get("category", "")
    event.pop("extra", None)
    return event
