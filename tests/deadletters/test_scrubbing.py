"""What a dead letter keeps of its error: the type, our own errors' messages, frames as file:line:function."""

import json
import traceback

import pytest

from fulfillment.exceptions import PriceNotInCatalog
from tests.audit.pii import PII_EMAIL, PII_SHAPES, assert_no_pii, pii_note
from tests.deadletters.conftest import token_client
from tests.deadletters.factories import event_create
from webhooks import deadletters
from webhooks.deadletters import dead_letter_record
from webhooks.models import WebhookEvent

TASK = "webhooks.tasks.webhook_events_process"


def _third_party_failure(note: str):
    data = {"note": note}  # a local holding the data: must never reach the row

    def parse(payload):
        raise ValueError(f"cannot parse {payload['note']!r}")

    try:
        try:
            parse(data)
        except ValueError as inner:
            raise KeyError(f"lookup failed for {note}") from inner
    except KeyError as exc:
        return exc


def _record(event, exc, **kwargs):
    return dead_letter_record(task_name=TASK, event_id=str(event.id), args=[str(event.id)], exc=exc, attempts=3, **kwargs)


@pytest.mark.django_db
class TestDeadLetterScrubbing:
    def test_a_third_party_error_keeps_its_type_and_frames_only(self, stripe_endpoint):
        event = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)
        exc = _third_party_failure(pii_note())

        row = _record(event, exc, traceback_text="".join(traceback.format_exception(exc)))

        row.refresh_from_db()
        assert row.error_type == "KeyError"
        assert row.error_message == deadletters.WITHHELD_MESSAGE
        lines = row.traceback.splitlines()
        assert lines[0] == "ValueError" and lines[-2] == "KeyError"
        assert "-- while handling the above:" in lines
        frames = [line.strip() for line in lines if line.startswith("  ")]
        assert frames and all(line.count(":") == 2 for line in frames), frames
        assert any(frame.startswith("tests/deadletters/test_scrubbing.py:") and frame.endswith(":parse") for frame in frames)
        assert "raise" not in row.traceback and "payload" not in row.traceback  # no source lines, no locals
        assert_no_pii([row.error_message, row.traceback, json.dumps(row.args)], PII_SHAPES)

    def test_our_own_error_keeps_its_message_through_the_detectors(self, stripe_endpoint):
        event = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)
        try:
            raise PriceNotInCatalog(f"price price_for_{PII_EMAIL} is not in the catalog")
        except PriceNotInCatalog as exc:
            row = _record(event, exc)

        assert row.error_type == "PriceNotInCatalog"
        assert row.error_message == "price [email] is not in the catalog"  # the detectors as a second net
        assert row.traceback.startswith("PriceNotInCatalog\n  tests/deadletters/test_scrubbing.py:")
        assert_no_pii([row.error_message, row.traceback], [PII_EMAIL])

    def test_a_traceback_text_gives_frames_only_when_the_exception_was_not_raised_here(self, stripe_endpoint):
        event = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)
        text = (
            "Traceback (most recent call last):\n"
            '  File "/home/alice.smith/payhook/.venv/lib/python3.11/site-packages/stripe/_util.py", line 7, in convert\n'
            f"    raise ValueError({pii_note()!r})\n"
            f"ValueError: {pii_note()}\n"
        )

        row = _record(event, ValueError(pii_note()), traceback_text=text)

        assert row.traceback == "ValueError\n  stripe/_util.py:7:convert"
        assert_no_pii([row.error_message, row.traceback], PII_SHAPES + ["alice.smith"])

    def test_the_api_still_shows_the_kept_fields(self, stripe_endpoint, operator):
        event = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)
        row = _record(event, _third_party_failure(pii_note()))

        body = token_client(operator).get(f"/api/v1/dead-letters/{row.id}/").json()

        assert body["error_type"] == "KeyError" and body["error_message"] == deadletters.WITHHELD_MESSAGE
        assert body["traceback"].startswith("ValueError\n")
        assert_no_pii([json.dumps(body)], PII_SHAPES)
