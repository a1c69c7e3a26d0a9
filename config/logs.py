"""Logs as JSON lines: one object per line, from every process (gunicorn and its workers, Celery
worker and beat), with the context an operator searches by and nothing personal (docs/logging.md).

Every line has `timestamp` (UTC, ISO 8601), `level`, `logger` and `event` (the message), plus the
context bound with `structlog.contextvars` where it applies: `endpoint` (the webhook view, and a
worker once it has loaded the event), `event_id` and `correlation_id` (the stored event, in the view
once stored and while a worker processes it), `task`, `task_id` and `attempt` (Celery's task_prerun,
config/celery_app.py; processing sets `attempt` to the event's own counter). The
stdlib `logging` calls of the apps (`logger.warning("… event=%s", …)`, `extra={…}`) and every
library's logger (django, celery, gunicorn) go through the same `ProcessorFormatter`.

The last processor before rendering is a safety net, not the policy: the policy is that log calls
name ids, types and outcomes only. It withholds fields that carry requests, bodies, headers or
personal data by name, and passes every other string (the message included) through the scrubber
Sentry uses (`config.sentry.text_scrub`: URLs without query or credentials, tokens in paths, then
the audit log's detectors for emails, IP addresses, secrets, cards, phones and street addresses).
A traceback keeps its exception types and frames; each exception's message is withheld, as is the
exception repr in Celery's own failure line: names in free text cannot be recognised by any
scrubber, which is also why log messages must not carry data.
"""

import functools
import re
import sys
import traceback
from collections.abc import Mapping

import structlog
from django.core.signals import request_finished, request_started

from config.sentry import text_scrub

LOG_FORMATS = ("json", "console")
WITHHELD = "[withheld]"

# Fields that are withheld whatever they hold: Django's `request` (its repr has the query string),
# anything that would be a body, headers, SQL parameters or a task's arguments (Celery's `data` on its
# "Task … received" lines), and names of personal data.
WITHHELD_KEYS = frozenset(
    {
        "request", "body", "raw_body", "payload", "headers", "header", "meta", "environ", "cookies", "params", "sql",
        "data", "args", "kwargs",
        "email", "recipient", "recipients", "to", "cc", "bcc", "name", "first_name", "last_name", "full_name",
        "username", "phone", "address", "ip", "ip_address", "client_ip", "remote_addr", "x_forwarded_for",
        "user_agent", "password", "secret", "token", "authorization", "cookie", "signature", "api_key",
    }
)
# A key containing one of these is personal or secret too (`customer_email`, `billing_address`, …),
# and so is one ending in `name`, but for the names of things.
PERSONAL_KEY_PARTS = (
    "email", "phone", "mobile", "address", "street", "postal", "password", "passwd", "secret", "token", "cookie",
    "authoriz", "signature", "credential", "api_key", "birth", "iban", "card_number",
)
THING_NAME_KEYS = frozenset({"task_name", "hostname", "host_name", "queue_name", "file_name", "filename", "template_name"})
# Written by the processors themselves: never data.
_OWN_KEYS = frozenset({"timestamp", "level", "logger"})
_FIRST_KEYS = ("timestamp", "level", "logger", "event")
_MAX_DEPTH = 4


# Strings that cannot hold what the detectors look for, passed without scanning (the scan costs tens
# of microseconds a string, and every line has a few): our ids (UUIDs), and short lower-case words
# joined by `.`, `_`, `-` or single spaces (logger and task names, statuses, most messages).
_PLAIN = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|(?![a-z]*(?:sec|sk|rk|pdl|key|token|bearer|basic)_)[a-z]{1,20}(?:[._\- ][a-z]{1,20}){0,8}"
)


def text_redact(text: str) -> str:
    """`text` through the scrubber, skipping the strings that are plainly safe."""
    if _PLAIN.fullmatch(text):
        return text
    return _text_redact_short(text) if len(text) <= 200 else text_scrub(text)


@functools.lru_cache(maxsize=2048)
def _text_redact_short(text: str) -> str:
    # Lines repeat their values (a task's name, an event's id on each of its lines): scan each once.
    return text_scrub(text)


def key_withheld(key: str) -> bool:
    """Whether a field's value is withheld by its name alone."""
    key = key.lower()
    if key in WITHHELD_KEYS or any(part in key for part in PERSONAL_KEY_PARTS):
        return True
    return key.endswith("name") and key not in THING_NAME_KEYS or key.endswith("_ip") or key.startswith("ip_")


def _value_redact(value, depth: int = 0):
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        # A card or a phone number passed as a number is still one.
        if abs(value) >= 10**7:
            scrubbed = text_redact(str(value))
            return value if scrubbed == str(value) else scrubbed
        return value
    if isinstance(value, str):
        return text_redact(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "[binary]"
    if depth < _MAX_DEPTH and isinstance(value, Mapping):
        return {
            str(key): WITHHELD if key_withheld(str(key)) else _value_redact(item, depth + 1)
            for key, item in value.items()
        }
    if depth < _MAX_DEPTH and isinstance(value, (list, tuple, set, frozenset)):
        return [_value_redact(item, depth + 1) for item in value]
    return text_redact(str(value))


def event_dict_redact(logger, method_name, event_dict):
    """The safety net: withheld fields by name, every other string scrubbed (see the module docstring)."""
    for key in list(event_dict):
        if key in _OWN_KEYS:
            continue
        if key_withheld(key):
            event_dict[key] = WITHHELD
        else:
            event_dict[key] = _value_redact(event_dict[key])
    # The standard keys first: a person reading raw lines sees when, how bad, where and what.
    return {**{key: event_dict[key] for key in _FIRST_KEYS if key in event_dict}, **event_dict}


def exception_text(exc: BaseException) -> str:
    """A traceback as Python prints it (chained exceptions included), each message withheld:
    exception messages are free text and may quote the data that caused them, names included, which
    no scrubber recognises. The dead letter keeps a scrubbed traceback for operators; Sentry gets
    `[withheld]` too (config/sentry.py)."""
    parts, seen, current = [], set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_list(traceback.extract_tb(current.__traceback__)))
        message = WITHHELD if str(current) else ""
        line = f"{type(current).__module__}.{type(current).__qualname__}".removeprefix("builtins.")
        block = f"Traceback (most recent call last):\n{frames}" if frames else ""
        parts.append(f"{block}{line}: {message}" if message else f"{block}{line}")
        if current.__cause__ is not None:
            parts.append("\nThe above exception was the direct cause of the following exception:\n")
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            parts.append("\nDuring handling of the above exception, another exception occurred:\n")
            current = current.__context__
        else:
            current = None
    return "\n".join(reversed(parts))


def task_failure_exception_withhold(logger, method_name, event_dict):
    """Celery's own failure line ("Task … raised unexpected: ValueError('<message>')") carries the
    exception's repr in its `exc` argument: only the exception's type is kept."""
    record, args = event_dict.get("_record"), event_dict.pop("positional_args", None)  # pass_foreign_args
    if record is not None and isinstance(args, Mapping) and isinstance(args.get("exc"), str):
        args = {**args, "exc": args["exc"].split("(", 1)[0] + "(" + WITHHELD + ")"}
        try:
            event_dict["event"] = str(record.msg) % args
        except (TypeError, ValueError, KeyError):
            event_dict["event"] = WITHHELD
    return event_dict


def exc_info_render(logger, method_name, event_dict):
    """`exc_info` becomes an `exception` string with scrubbed messages (replaces structlog's format_exc_info)."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[1] is not None:
        event_dict["exception"] = exception_text(exc_info[1])
    return event_dict


def record_attributes_drop(logger, method_name, event_dict):
    """`message` and `asctime` are set on a record by whichever formatter saw it first: not extras."""
    event_dict.pop("message", None)
    event_dict.pop("asctime", None)
    return event_dict


def _pre_chain() -> list:
    """What every line gets before its own processors, stdlib records and structlog's alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def structlog_configure() -> None:
    """structlog's own loggers (`structlog.get_logger()`) hand their event dicts to the stdlib
    handlers, so they are formatted like every other line. Idempotent."""
    structlog.configure(
        processors=[
            *_pre_chain(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def formatter_build(log_format: str = "json") -> structlog.stdlib.ProcessorFormatter:
    """The formatter of every handler (LOGGING's `"()"` factory; gunicorn's logconfig_dict too)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    structlog_configure()
    renderer = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        pass_foreign_args=True,  # for task_failure_exception_withhold; it drops them again
        # The stdlib records of the apps and of every library: %-style arguments are rendered by
        # getMessage(), `extra={…}` fields are added, then the context and the standard keys.
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(), record_attributes_drop, task_failure_exception_withhold, *_pre_chain()
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exc_info_render,
            structlog.processors.StackInfoRenderer(),
            event_dict_redact,
            renderer,
        ],
    )


def logging_config(*, log_format: str = "json", level: str = "INFO", loggers: dict | None = None) -> dict:
    """A dictConfig whose root handler writes one formatted line per record to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "config.logs.formatter_build", "log_format": log_format}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": dict(loggers or {}),
    }


def request_context_clear(**kwargs) -> None:
    """Nothing bound for one request (the webhook view's endpoint and event id) reaches the next
    one the same process serves."""
    structlog.contextvars.clear_contextvars()


# Django's request signals exist in every web process that loads settings (which import this module).
request_started.connect(request_context_clear, dispatch_uid="config.logs.request_started")
request_finished.connect(request_context_clear, dispatch_uid="config.logs.request_finished")


def task_context_bind(*, task_name: str, task_id: str | None, retries: int) -> None:
    """A Celery task's context, from a clean slate: the previous task's never leaks into it."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task=task_name, task_id=task_id, attempt=retries + 1)


def task_context_clear() -> None:
    structlog.contextvars.clear_contextvars()


def event_context_bind(*, event_id) -> None:
    """A stored event's id is also its correlation id (the canonical events' `correlationid`)."""
    structlog.contextvars.bind_contextvars(event_id=str(event_id), correlation_id=str(event_id))
