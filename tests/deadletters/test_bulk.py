"""Operator actions over 10,000 rows stay set-based: the statement count does not grow per row."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.deadletters.factories import dead_letter_build, events_create_many
from webhooks import deadletters
from webhooks.models import DeadLetter, WebhookEvent

pytestmark = pytest.mark.slow


def _dead_letters_create(endpoint, count: int) -> None:
    events = events_create_many(endpoint=endpoint, count=count, status=WebhookEvent.Status.DEAD)
    DeadLetter.objects.bulk_create([dead_letter_build(event=event) for event in events], batch_size=2000)


@pytest.fixture
def audit_batches(monkeypatch):
    """The audit app's bulk append, recorded: what this app hands it, in how many calls.

    The audit chain's own cost per entry is the audit app's to keep flat; here only the statements
    this app issues are counted, and they must not grow per row.
    """
    batches: list[list[dict]] = []
    monkeypatch.setattr(deadletters, "audit_entries_append", lambda *, entries: batches.append(entries))
    return batches


@pytest.mark.parametrize(
    ("service", "kwargs", "status"),
    [
        (deadletters.dead_letter_replay_bulk, {}, "replayed"),
        (deadletters.dead_letter_discard_bulk, {"note": "provider test events"}, "discarded"),
    ],
)
def test_bulk_actions_on_10000_rows_issue_as_many_statements_as_on_10(
    stripe_endpoint, operator, audit_batches, queued, django_capture_on_commit_callbacks, service, kwargs, status
):
    _dead_letters_create(stripe_endpoint, 10)
    with CaptureQueriesContext(connection) as small, django_capture_on_commit_callbacks(execute=True):
        assert service(queryset=DeadLetter.objects.all(), user=operator, **kwargs).acted == 10
    DeadLetter.objects.all().delete()
    WebhookEvent.objects.all().delete()
    audit_batches.clear()
    queued_before = len(queued())

    _dead_letters_create(stripe_endpoint, 10_000)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as large, django_capture_on_commit_callbacks(execute=True):
        outcome = service(queryset=DeadLetter.objects.filter(status="open"), user=operator, **kwargs)
    elapsed = time.perf_counter() - started

    assert (outcome.acted, outcome.skipped) == (10_000, 0)
    assert len(large.captured_queries) == len(small.captured_queries)
    assert DeadLetter.objects.filter(status=status).count() == 10_000
    assert len(audit_batches) == 1 and len(audit_batches[0]) == 10_000
    assert len({entry["dedup_key"] for entry in audit_batches[0]}) == 10_000
    if status == "replayed":
        assert WebhookEvent.objects.filter(status="received", attempts=0).count() == 10_000
        batches = queued()[queued_before:]
        assert sum(len(args[0]) for _, args in batches) == 10_000
        assert max(len(args[0]) for _, args in batches) <= 20
    print(f"{service.__name__} on 10,000 rows: {elapsed:.2f} s, {len(large.captured_queries)} statements")
