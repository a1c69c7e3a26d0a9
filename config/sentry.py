"""Sentry hooks: nothing that could carry a payload, a secret or personal data leaves the process.

Errors, transactions and breadcrumbs are shaped by allow-list, like the audit log's data:

- request: method, the URL without query, fragment or credentials and with the unsubscribe token
  replaced by `[token]`, and a few harmless headers; never the body, cookies, query string or
  environment;
- user: the id only;
- exceptions: the type always, the message only for payhook's own errors (`ApplicationError`,
  whose messages are PII-free by contract; the detectors still run on them), never a frame's
  variables or source lines;
- log messages: the logger's format string (which names ids only), never its arguments or the
  formatted text;
- breadcrumbs: category, level, type and time; a log breadcrumb's format string; an HTTP
  breadcrumb's method, scrubbed URL and status code; nothing else;
- transactions: the same request, the transaction name and span descriptions scrubbed like URLs.

Whatever free text remains passes `audit.redaction.redact_text` as a second net.
"""

import logging
import re
from urllib.parse import urlsplit, urlunsplit

from config.exceptions import ApplicationError

WITHHELD = "[withheld]"

# Headers that say how a request was made, never who made it or with what credentials.
HEADER_ALLOWLIST = frozenset({"content-type", "content-length", "accept", "host", "x-request-id", "x-correlation-id"})
_CRUMB_KEYS = ("type", "category", "level", "timestamp")
_HTTP_CRUMB_DATA = {"method", "status_code", "reason"}
_SPAN_DATA_DROP = {"http.query", "http.fragment", "url.query", "url.fragment"}

# `/notifications/unsubscribe/<token>/` (and the token anywhere it follows `unsubscribe/`).
_UNSUBSCRIBE_TOKEN = re.compile(r"(?i)(unsubscribe/)[^/?#\s\"'<>]+")
# A path segment that looks like a signed value or a key rather than a name: long, with digits.
_TOKEN_SEGMENT = re.compile(r"(?<=/)(?=[^/?#\s]*\d)[A-Za-z0-9_\-.:~=]{32,}(?=/|$|[?#\s])")
_URL_IN_TEXT = re.compile(r"\b(?:https?|wss?)://[^\s\"'<>]+")


def _text(value) -> str:
    from audit.redaction import redact_text

    return redact_text(str(value))


def path_scrub(text: str) -> str:
    """Unsubscribe and other token-like path segments become `[token]`."""
    text = _UNSUBSCRIBE_TOKEN.sub(r"\1[token]", text)
    return _TOKEN_SEGMENT.sub("[token]", text)


def url_scrub(url) -> str:
    """The URL without credentials, query or fragment, tokens in its path replaced."""
    url = str(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return WITHHELD
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return _text(path_scrub(urlunsplit((parts.scheme, netloc, parts.path, "", ""))))


def text_scrub(text) -> str:
    """Free text with any URL in it scrubbed as a URL, then the detectors."""
    text = _URL_IN_TEXT.sub(lambda match: url_scrub(match.group()), str(text))
    return _text(path_scrub(text))


def _request_scrub(request) -> dict:
    if not isinstance(request, dict):
        return {}
    out = {}
    if isinstance(request.get("method"), str):
        out["method"] = request["method"][:16]
    if request.get("url"):
        out["url"] = url_scrub(request["url"])
    headers = request.get("headers")
    if isinstance(headers, dict):
        out["headers"] = {k: _text(v) for k, v in headers.items() if str(k).lower() in HEADER_ALLOWLIST}
    return out


def _own_error_types(hint) -> set[tuple[str, str]]:
    """(module, name) of the payhook errors in the hint's exception chain: their messages stay."""
    exc_info = (hint or {}).get("exc_info")
    current = exc_info[1] if exc_info and len(exc_info) > 1 else None
    own, seen = set(), set()
    while isinstance(current, BaseException) and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ApplicationError):
            own.add((type(current).__module__, type(current).__name__))
        current = current.__cause__ or current.__context__
    return own


def _exceptions_scrub(event, hint) -> None:
    own = _own_error_types(hint)
    for exception in (event.get("exception") or {}).get("values") or []:
        if (exception.get("module"), exception.get("type")) in own and exception.get("value"):
            exception["value"] = _text(exception["value"])
        else:
            exception["value"] = WITHHELD
        stacktrace = exception.get("stacktrace") or {}
        for frame in stacktrace.get("frames") or []:
            for key in ("vars", "pre_context", "context_line", "post_context"):
                frame.pop(key, None)
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            for key in ("vars", "pre_context", "context_line", "post_context"):
                frame.pop(key, None)


def _logentry_scrub(event) -> None:
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        # The format string, never its arguments nor the text formatted from them.
        template = logentry.get("message") or ""
        event["logentry"] = {"message": text_scrub(template)} if template else {}
    if "message" in event:
        event["message"] = text_scrub(event["message"] or "")


def breadcrumb_scrub(crumb, hint=None):
    """A breadcrumb reduced to its kind and time, plus what its kind may keep."""
    if not isinstance(crumb, dict):
        return None
    out = {key: crumb[key] for key in _CRUMB_KEYS if key in crumb}
    record = (hint or {}).get("log_record")
    if record is not None:
        out["message"] = text_scrub(record.msg)  # the format string, not the formatted message
    elif crumb.get("message"):
        out["message"] = text_scrub(crumb["message"])
    data = crumb.get("data")
    if isinstance(data, dict) and (crumb.get("type") == "http" or "url" in data):
        kept = {key: data[key] for key in _HTTP_CRUMB_DATA if key in data and isinstance(data[key], (int, str))}
        kept = {key: value if isinstance(value, int) else _text(value) for key, value in kept.items()}
        if data.get("url"):
            kept["url"] = url_scrub(data["url"])
        out["data"] = kept
    return out


def _common_scrub(event) -> None:
    if "request" in event:
        event["request"] = _request_scrub(event.get("request"))
    user = event.get("user")
    if isinstance(user, dict) and user.get("id") is not None:
        event["user"] = {"id": str(user["id"])}
    else:
        event.pop("user", None)
    event.pop("extra", None)
    if isinstance(event.get("tags"), dict):
        event["tags"] = {key: text_scrub(value) for key, value in event["tags"].items()}
    if event.get("transaction"):
        event["transaction"] = text_scrub(event["transaction"])
    crumbs = event.get("breadcrumbs")
    if isinstance(crumbs, dict):
        crumbs["values"] = [kept for kept in map(breadcrumb_scrub, crumbs.get("values") or []) if kept]
    elif isinstance(crumbs, list):
        event["breadcrumbs"] = [kept for kept in map(breadcrumb_scrub, crumbs) if kept]


def sentry_before_send(event, hint):
    _common_scrub(event)
    _exceptions_scrub(event, hint)
    _logentry_scrub(event)
    return event


def _span_scrub(span) -> None:
    if not isinstance(span, dict):
        return
    if span.get("description"):
        span["description"] = text_scrub(span["description"])
    data = span.get("data")
    if isinstance(data, dict):
        span["data"] = {
            key: text_scrub(value) if isinstance(value, str) else value
            for key, value in data.items() if key not in _SPAN_DATA_DROP
        }


def sentry_before_send_transaction(event, hint):
    _common_scrub(event)
    for span in event.get("spans") or []:
        _span_scrub(span)
    _span_scrub((event.get("contexts") or {}).get("trace"))
    return event


def sentry_before_breadcrumb(crumb, hint):
    return breadcrumb_scrub(crumb, hint)


def sentry_integrations() -> list:
    """Django, Celery and logging, named rather than left to auto-enabling, each set for privacy."""
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    return [
        # A request's error and transaction are named by its URL pattern
        # (`notifications/unsubscribe/<str:token>/`), never by the values in its path.
        DjangoIntegration(transaction_style="url"),
        # An exception escaping a task is reported with the task's name; its arguments (ids anyway)
        # travel in `extra`, which the hooks drop. Beat's schedule is not made a Sentry cron monitor.
        CeleryIntegration(monitor_beat_tasks=False),
        # INFO and up become breadcrumbs, ERROR and up events: payhook logs a problem someone must look
        # at (a dead letter, a database that went away) as an error, and the rest as info or warning.
        LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
    ]


def sentry_options() -> dict:
    """The integrations, hooks and privacy options `sentry_sdk.init` is given (settings and tests
    share them)."""
    return {
        "integrations": sentry_integrations(),
        # Not sending default PII is sentry-sdk's default (and `send_default_pii` is deprecated in 2.x);
        # the hooks below scrub whatever an integration collects anyway.
        "include_local_variables": False,
        "include_source_context": False,
        "max_request_body_size": "never",
        "before_send": sentry_before_send,
        "before_send_transaction": sentry_before_send_transaction,
        "before_breadcrumb": sentry_before_breadcrumb,
    }
