"""Logs as JSON lines (config/logs.py): one object per line with the standard keys and the context,
nothing personal in the message, its arguments, extra fields or exception messages, and no context
carried from one request or task to the next."""

import io
import json
import logging
import logging.config
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
import time_machine
from django.core import mail
from django.core.mail import get_connection

from config.celery_app import _logging_setup
from config.logs import WITHHELD, formatter_build, logging_config, text_redact
from config.mail import FileEmailBackend
from tests.audit import pii
from tests.conftest import post_json, signed_headers
from tests.webhooks.factories import WebhookEventFactory
from webhooks import outbox, processing
from webhooks.tasks import webhook_events_dispatch, webhook_events_process

NEEDLES = [*pii.PII_SHAPES]
# A name in free text cannot be told from other words: the redactor withholds names by their field's
# name, and messages must never be built from data (docs/logging.md).
SHAPES = [needle for needle in NEEDLES if needle not in (pii.PII_NAME, "john doe")]


class Lines:
    """What a handler with the production formatter wrote, line by line."""

    def __init__(self, log_format: str = "json"):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter_build(log_format))

    def text(self) -> str:
        return self.stream.getvalue()

    def objects(self) -> list[dict]:
        return [json.loads(line) for line in self.text().splitlines()]


@pytest.fixture
def lines():
    """The formatter on the root logger at DEBUG, as every process has it; the context starts empty."""
    captured = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(captured.handler)
    root.setLevel(logging.DEBUG)
    structlog.contextvars.clear_contextvars()
    yield captured
    root.removeHandler(captured.handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


def _raise_chained():
    try:
        raise ValueError(f"cannot parse {pii.PII_EMAIL} from {pii.PII_IP}")
    except ValueError as inner:
        raise KeyError(f"no customer {pii.PII_PHONE} at {pii.PII_STREET}, key {pii.PII_SECRET}") from inner


class TestTheFormat:
    def test_every_record_is_one_json_object_per_line_with_the_standard_keys(self, lines):
        log = logging.getLogger("payhook.test")
        log.info("event %s: attempt=%d", "processed", 2)  # %-style, as the apps log
        log.warning("two\nlines", extra={"events": 3})
        try:
            _raise_chained()
        except KeyError:
            log.exception("failed")
        structlog.get_logger("payhook.native").info("native %s", "call", key="value")

        objects = lines.objects()
        assert len(lines.text().splitlines()) == 4
        assert [o["event"] for o in objects] == ["event processed: attempt=2", "two\nlines", "failed", "native call"]
        for obj in objects:
            assert {"timestamp", "level", "logger", "event"} <= set(obj)
            assert obj["timestamp"].endswith("Z")
        assert [o["level"] for o in objects] == ["info", "warning", "error", "info"]
        assert objects[1]["events"] == 3 and objects[3]["key"] == "value"
        assert objects[0]["logger"] == "payhook.test" and objects[3]["logger"] == "payhook.native"

    def test_an_exception_keeps_its_types_and_frames(self, lines):
        try:
            _raise_chained()
        except KeyError:
            logging.getLogger("payhook.test").error("failed", exc_info=True)

        exception = lines.objects()[0]["exception"]
        assert exception.startswith("Traceback (most recent call last):")
        # Messages are withheld whole: a name in one ("no customer Carolina Smith") no scrubber knows.
        assert "ValueError: [withheld]" in exception
        assert "The above exception was the direct cause of the following exception" in exception
        assert "KeyError: [withheld]" in exception
        assert "ValueError: cannot" not in exception and "KeyError: 'no customer" not in exception
        assert f'File "{Path(__file__)}"' in exception and "in _raise_chained" in exception

    def test_celerys_failure_line_keeps_the_exception_type_only(self, lines):
        context = {"name": "t", "id": "1", "description": "raised unexpected", "exc": "ValueError('mail Carolina Smith')"}
        logging.getLogger("celery.app.trace").error("Task %(name)s[%(id)s] %(description)s: %(exc)s", context)

        assert lines.objects()[0]["event"] == "Task t[1] raised unexpected: ValueError([withheld])"

    def test_the_context_is_merged_into_every_line_and_an_explicit_value_wins(self, lines):
        structlog.contextvars.bind_contextvars(endpoint="stripe", event_id="e-1", correlation_id="e-1", task="t", attempt=2)
        logging.getLogger("payhook.test").warning("event dead-lettered", extra={"event_id": "e-2"})

        line = lines.objects()[0]
        assert (line["endpoint"], line["correlation_id"], line["task"], line["attempt"]) == ("stripe", "e-1", "t", 2)
        assert line["event_id"] == "e-2"

    def test_console_format_is_for_people_and_redacted_too(self):
        console = Lines("console")
        record = logging.LogRecord("payhook.test", logging.WARNING, __file__, 1, "mail to %s", (pii.PII_EMAIL,), None)
        text = console.handler.format(record)
        assert "mail to [email]" in text and not text.startswith("{")

    def test_an_unknown_format_is_refused(self):
        with pytest.raises(ValueError, match="LOG_FORMAT"):
            formatter_build("xml")

    def test_settings_give_every_handler_the_structured_formatter(self, settings):
        assert settings.LOG_FORMAT == "json"
        assert settings.LOGGING["formatters"]["structured"]["()"] == "config.logs.formatter_build"
        assert all(h["formatter"] == "structured" for h in settings.LOGGING["handlers"].values())
        assert logging_config(log_format="console")["formatters"]["structured"]["log_format"] == "console"


class TestTheRedactor:
    def test_personal_data_is_masked_in_the_message_its_arguments_and_extra_fields(self, lines):
        log = logging.getLogger("payhook.test")
        log.warning("lookup failed for %s (%s)", pii.pii_note(), pii.PII_EMAIL_QUOTED)
        log.warning(
            "odd delivery",
            extra={
                "email": pii.PII_EMAIL, "customer_name": pii.PII_NAME, "note": pii.pii_note(), "card": pii.PII_CARD_NUMBER,
                "nested": {"phone": pii.PII_PHONE, "items": [pii.PII_IBAN, {"address": pii.PII_STREET}], "ip": pii.PII_IPV6},
                "body": b"raw", "headers": {"Stripe-Signature": "t=1,v1=abc"}, "request": object(),
                "data": {"args": [pii.PII_NAME]},  # Celery's "Task … received" context
            },
        )
        log.warning(f"message built from data: {pii.PII_SECRET} {pii.PII_HEX_TOKEN}")

        objects = lines.objects()
        pii.assert_no_pii(lines.text().splitlines(), SHAPES)
        assert pii.PII_NAME not in json.dumps({key: value for key, value in objects[1].items() if key != "note"})
        assert objects[0]["event"].startswith("lookup failed for call ")  # the text around the data stays
        extra = objects[1]
        assert extra["email"] == extra["customer_name"] == extra["body"] == extra["headers"] == extra["request"] == WITHHELD
        assert extra["data"] == WITHHELD
        assert extra["card"] == "[card]" and extra["nested"]["phone"] == WITHHELD and extra["nested"]["ip"] == WITHHELD
        assert extra["nested"]["items"][0] == "[card]" and extra["nested"]["items"][1] == {"address": WITHHELD}
        assert objects[2]["event"] == "message built from data: [token] [token]"

    def test_secrets_made_of_letters_only_are_not_taken_for_plain_words(self, lines):
        log = logging.getLogger("payhook.test")
        for secret in ("whsec_abcdefghijklmnop", "whsk_abcdefghijklmnop", "sk_live_abcdefghijklmnop",
                       "pdl_ntfset_01hv8x29kz0t586xy6zn1a62ne_abcdefghijklmnopqrstuv"):
            log.warning(secret)
            log.warning("rotated", extra={"note": secret})

        assert {o["event"] for o in lines.objects()} == {"[token]", "rotated"}
        assert {o.get("note") for o in lines.objects()} == {None, "[token]"}

    def test_ids_types_and_counts_pass_unchanged(self, lines):
        logging.getLogger("payhook.test").info(
            "event processed",
            extra={"event_id": "0b6f1c6e-5b7e-4a8e-9f0a-1b2c3d4e5f60", "error": "OperationalError", "attempts": 3,
                   "provider_event_id": "evt_1NqkLm2eZvKYlo2C", "task": "webhooks.tasks.webhook_events_process"},
        )
        line = lines.objects()[0]
        assert line["event_id"] == "0b6f1c6e-5b7e-4a8e-9f0a-1b2c3d4e5f60" and line["provider_event_id"] == "evt_1NqkLm2eZvKYlo2C"
        assert (line["error"], line["attempts"], line["task"]) == ("OperationalError", 3, "webhooks.tasks.webhook_events_process")


class TestContextPerRequest:
    def test_the_view_binds_the_endpoint_and_nothing_outlives_the_request(self, client, stripe_endpoint, lines):
        body = json.dumps({"id": "evt_ctx", "object": "event", "email": pii.PII_EMAIL}).encode()
        forged = signed_headers("stripe", "whsec_not_the_endpoint_secret_0123456789", body)

        response = post_json(client, "/webhooks/stripe/", body, forged)

        assert response.status_code == 400
        refused = [o for o in lines.objects() if o["event"].startswith("webhook refused")]
        assert refused and refused[0]["endpoint"] == "stripe" and refused[0]["level"] == "warning"
        assert structlog.contextvars.get_contextvars() == {}
        pii.assert_no_pii(lines.text().splitlines(), NEEDLES)

    def test_a_request_starts_clean_whatever_an_earlier_one_left_bound(self, client, stripe_endpoint, stripe_secret, lines):
        seen = []
        body = json.dumps({"id": "evt_ctx_ok", "object": "event", "type": "customer.created", "data": {"object": {}}}).encode()

        response = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))
        structlog.contextvars.bind_contextvars(leak="from a previous request")  # as if it had leaked
        client.get("/healthz")
        seen.append(structlog.contextvars.get_contextvars())

        assert response.status_code == 200
        assert seen == [{}]


class TestContextPerTask:
    def test_a_task_binds_its_name_and_attempt_and_leaves_nothing_behind(self, db, monkeypatch):
        inside = []
        monkeypatch.setattr(outbox, "webhook_events_dispatch", lambda: inside.append(structlog.contextvars.get_contextvars()) or 0)
        structlog.contextvars.bind_contextvars(leak="from a previous task")

        webhook_events_dispatch.apply()

        assert inside[0]["task"] == "webhooks.tasks.webhook_events_dispatch"
        assert inside[0]["attempt"] == 1 and inside[0]["task_id"]
        assert "leak" not in inside[0]
        assert structlog.contextvars.get_contextvars() == {}

    def test_each_event_of_a_message_is_logged_with_its_id_and_its_own_attempt(self, db, monkeypatch, lines, settings):
        settings.WEBHOOK_FULFIL_BATCH_MIN_EVENTS = 10**6  # one by one (the batch path: tests/webhooks/test_batch_fulfilment.py)
        events = [WebhookEventFactory(), WebhookEventFactory()]
        ids = [str(event.id) for event in events]

        def process(*, event_id):
            assert "endpoint" not in structlog.contextvars.get_contextvars()  # nothing of the event before
            structlog.contextvars.bind_contextvars(attempt=3 if event_id == ids[0] else 1, endpoint="stripe")  # as processing does
            logging.getLogger("fulfillment.services").info("consumer line")
            return "processed"

        monkeypatch.setattr(processing, "webhook_event_process", process)
        webhook_events_process.apply(args=[ids])

        consumer = [o for o in lines.objects() if o["event"] == "consumer line"]
        done = [o for o in lines.objects() if o["event"] == "event processed"]
        assert [(o["event_id"], o["correlation_id"], o["attempt"]) for o in consumer] == [(ids[0], ids[0], 3), (ids[1], ids[1], 1)]
        assert [o["event_id"] for o in done] == ids and {o["task"] for o in done} == {"webhooks.tasks.webhook_events_process"}
        assert structlog.contextvars.get_contextvars() == {}

    def test_the_worker_logs_through_django_logging_and_prints_become_lines(self, settings, monkeypatch):
        configured = []
        monkeypatch.setattr(logging.config, "dictConfig", configured.append)
        monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test
        monkeypatch.setattr(sys, "__stdout__", sys.__stdout__)
        root_level = logging.getLogger().level
        try:
            _logging_setup(loglevel=logging.INFO)
            assert configured == [settings.LOGGING]
            assert logging.getLogger().level == logging.INFO
            assert sys.stdout is sys.__stdout__ and sys.stdout.logger.name == "celery.redirected"
        finally:
            logging.getLogger().setLevel(root_level)


class TestDevelopmentMail:
    def test_mail_goes_to_a_file_and_one_line_names_it_never_the_recipient(self, settings, tmp_path, lines):
        settings.EMAIL_FILE_PATH = str(tmp_path)

        with get_connection("config.mail.FileEmailBackend") as connection:
            sent = mail.EmailMessage("Your receipt", f"Thanks {pii.PII_NAME}", to=[pii.PII_EMAIL], connection=connection).send()

        (written,) = tmp_path.iterdir()
        assert sent == 1 and pii.PII_EMAIL in written.read_text()
        (line,) = [o for o in lines.objects() if o["logger"] == "config.mail"]
        assert line["event"] == "mail written to a file" and line["file"] == written.name and line["messages"] == 1
        pii.assert_no_pii(lines.text().splitlines(), NEEDLES)

    def test_file_names_pass_the_redactor_unchanged_at_any_time(self, settings, tmp_path, monkeypatch):
        settings.EMAIL_FILE_PATH = str(tmp_path)
        start = datetime(2026, 12, 2, tzinfo=timezone.utc)
        for step in range(0, 3000 * 86400, 86400 + 3607):  # every day of eight years, at shifting times
            with time_machine.travel(start + timedelta(seconds=step), tick=False):
                name = Path(FileEmailBackend()._get_filename()).name
            assert text_redact(name) == name, name
