import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.deadletters.factories import dead_letter_create, event_create, events_create_many
from webhooks.models import WebhookEvent

TASK = "webhooks.tasks.webhook_events_process"


def _run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("replay_events", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def window(stripe_endpoint):
    """Three events inside [since, until) (two invoice.paid, one dead with an open dead letter), one outside."""
    now = timezone.now()
    inside = [
        event_create(endpoint=stripe_endpoint, received_at=now - timedelta(hours=2), event_type="invoice.paid"),
        event_create(endpoint=stripe_endpoint, received_at=now - timedelta(hours=1), event_type="charge.refunded"),
    ]
    dead = dead_letter_create(endpoint=stripe_endpoint)
    WebhookEvent.objects.filter(id=dead.event_id).update(received_at=now - timedelta(minutes=30))
    outside = event_create(endpoint=stripe_endpoint, received_at=now - timedelta(days=2))
    since = (now - timedelta(hours=3)).isoformat()
    until = now.isoformat()
    return {"inside": [*inside, dead.event], "dead_letter": dead, "outside": outside, "since": since, "until": until}


def test_dry_run_counts_and_changes_nothing(window, audit_calls, queued):
    out, _ = _run("--endpoint", "stripe", "--since", window["since"], "--until", window["until"], "--dry-run")

    assert "3 events match" in out and "dry run" in out
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed", "dead"}
    assert audit_calls == [] and queued() == []


def test_it_requeues_the_selected_events_in_batches(window, audit_calls, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out, err = _run("--endpoint", "stripe", "--since", window["since"], "--until", window["until"])

    assert "3 events match" in out and "re-queued 3 events" in out
    assert "100%" in err  # the progress bar
    inside_ids = {str(event.id) for event in window["inside"]}
    assert set(map(str, WebhookEvent.objects.filter(status="received").values_list("id", flat=True))) == inside_ids
    window["outside"].refresh_from_db()
    assert window["outside"].status == "processed"
    window["dead_letter"].refresh_from_db()
    assert window["dead_letter"].status == "replayed"
    assert {event_id for _, args in queued() for event_id in args[0]} == inside_ids
    assert {(c["action"], c["actor"]) for c in audit_calls} == {("event.reprocessed", "system")}
    assert len(audit_calls) == 3


def test_type_narrows_the_selection(window, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = _run("--endpoint", "stripe", "--since", window["since"], "--until", window["until"], "--type", "charge.refunded")
    assert "1 events match" in out
    assert list(WebhookEvent.objects.filter(status="received").values_list("event_type", flat=True)) == ["charge.refunded"]


def test_status_and_limit_replay_a_small_batch_first_then_the_rest(window, django_capture_on_commit_callbacks):
    base = ["--endpoint", "stripe", "--since", window["since"], "--until", window["until"]]
    out, _ = _run(*base, "--dry-run")
    assert "by status: dead 1, processed 2" in out

    # The runbook's "small batch first": the oldest processed event only.
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = _run(*base, "--status", "processed", "--limit", "1")
    assert "1 events match" in out and "status=processed limit=1" in out and "re-queued 1 events" in out
    oldest = window["inside"][0]
    oldest.refresh_from_db()
    assert oldest.status == "received"
    assert WebhookEvent.objects.get(id=window["inside"][1].id).status == "processed"

    # Then the rest: the batch already replayed is no longer `processed`, so it is not selected again.
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = _run(*base, "--status", "processed")
    assert "1 events match" in out and "re-queued 1 events" in out
    assert WebhookEvent.objects.get(id=window["inside"][1].id).status == "received"
    assert WebhookEvent.objects.get(id=window["dead_letter"].event_id).status == "dead"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--endpoint", "nope", "--since", "2026-01-01", "--until", "2026-01-02"], "unknown endpoint 'nope'"),
        (["--endpoint", "stripe", "--since", "yesterday", "--until", "2026-01-02"], "--since 'yesterday' is not an ISO 8601"),
        (["--endpoint", "stripe", "--since", "2026-01-02", "--until", "2026-01-02T00:00:00Z"], "--since must be earlier"),
        (["--endpoint", "stripe", "--since", "2026-01-03", "--until", "2026-01-02"], "--since must be earlier"),
        (["--endpoint", "stripe", "--since", "2026-01-01", "--until", "2026-01-02", "--limit", "0"], "--limit must be a positive"),
    ],
)
def test_bad_input_is_a_one_line_command_error(stripe_endpoint, args, reason):
    with pytest.raises(CommandError) as raised:
        _run(*args)
    assert reason in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.slow
def test_replaying_10000_processed_events(stripe_endpoint, queued, django_capture_on_commit_callbacks, capsys):
    events_create_many(endpoint=stripe_endpoint, count=10_000, received_at=timezone.now() - timedelta(hours=1))
    since = (timezone.now() - timedelta(hours=2)).isoformat()
    until = timezone.now().isoformat()

    started = time.perf_counter()
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = _run("--endpoint", "stripe", "--since", since, "--until", until)
    elapsed = time.perf_counter() - started

    assert "re-queued 10000 events" in out
    assert WebhookEvent.objects.filter(status="received").count() == 10_000
    messages = queued()
    assert sum(len(args[0]) for _, args in messages) == 10_000
    with capsys.disabled():
        print(f"\nreplay_events on 10,000 processed events: {elapsed:.2f} s, {len(messages)} messages")
