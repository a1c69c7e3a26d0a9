"""An action on one row is its bulk version over that row: same row, same event, same audit entries."""

import pytest

from audit.models import AuditEntry
from tests.deadletters.factories import dead_letter_create
from webhooks.deadletters import (
    DeadLetterError,
    EventInFlight,
    dead_letter_discard,
    dead_letter_discard_bulk,
    dead_letter_replay,
    dead_letter_replay_bulk,
    dead_letter_resolve,
    dead_letter_resolve_bulk,
    webhook_event_reprocess,
    webhook_events_reprocess_bulk,
)
from webhooks.models import DeadLetter, WebhookEvent

NOTE = "  fixed by hand; buyer carol@example.org paid by 4242 4242 4242 4242  "
PAIRS = [
    pytest.param(dead_letter_replay, dead_letter_replay_bulk, id="replay"),
    pytest.param(dead_letter_resolve, dead_letter_resolve_bulk, id="resolve"),
    pytest.param(dead_letter_discard, dead_letter_discard_bulk, id="discard"),
]


def _state(row: DeadLetter, published: list) -> dict:
    """What an action leaves behind, with the row's and its event's own ids taken out."""
    row = DeadLetter.objects.get(pk=row.pk)
    event = WebhookEvent.objects.get(pk=row.event_id)
    entries = []
    for entry in AuditEntry.objects.filter(event_id=event.id).order_by("id").values("action", "actor", "data", "dedup_key"):
        if entry["data"].get("dead_letter") is not None:
            assert entry["data"].pop("dead_letter") == row.id
        if entry["dedup_key"]:
            action, row_id, occurrences = entry["dedup_key"].split(":")
            assert row_id == str(row.id)
            entry["dedup_key"] = (action, occurrences)
        entries.append(entry)
    return {
        "row": (row.status, row.note, row.acted_by_id, row.acted_at is not None, row.attempts, row.occurrences),
        "event": (event.status, event.attempts, event.last_error, event.dispatched_at is not None),
        "audit": entries,
        "published": [(task, [["<event>" if i == str(event.id) else i for i in args[0]]]) for task, args in published],
    }


def _run(action, queued, capture) -> tuple[object, list]:
    before = len(queued())
    with capture(execute=True):
        try:
            result = action()
        except DeadLetterError as exc:
            result = exc
    return result, queued()[before:]


@pytest.mark.parametrize(("single", "bulk"), PAIRS)
@pytest.mark.parametrize("status", [DeadLetter.Status.OPEN, DeadLetter.Status.REPLAYED, DeadLetter.Status.DISCARDED])
def test_a_single_action_and_its_bulk_version_leave_the_same_rows_and_audit_entries(
    stripe_endpoint, operator, queued, django_capture_on_commit_callbacks, single, bulk, status
):
    one, other = (dead_letter_create(endpoint=stripe_endpoint, status=status) for _ in range(2))

    result, one_published = _run(lambda: single(dead_letter=one, user=operator, note=NOTE), queued,
                                 django_capture_on_commit_callbacks)
    outcome, other_published = _run(lambda: bulk(queryset=DeadLetter.objects.filter(pk=other.pk), user=operator, note=NOTE),
                                    queued, django_capture_on_commit_callbacks)

    assert _state(one, one_published) == _state(other, other_published)
    acted = outcome.acted == 1
    assert acted == (not isinstance(result, DeadLetterError))
    assert (outcome.acted, outcome.skipped) == ((1, 0) if acted else (0, 1))
    if acted:
        assert result.pk == one.pk and result.status != status
        assert result.note == "fixed by hand; buyer [email] paid by [card]"
    else:
        assert result.code in {"dead_letter_not_open", "dead_letter_closed"}


@pytest.mark.parametrize("status", [WebhookEvent.Status.DEAD, WebhookEvent.Status.PROCESSING])
def test_reprocessing_one_event_and_its_bulk_version_leave_the_same_rows_and_audit_entries(
    stripe_endpoint, operator, queued, django_capture_on_commit_callbacks, status
):
    one, other = (dead_letter_create(endpoint=stripe_endpoint, event_status=status) for _ in range(2))

    def single():
        try:
            return webhook_event_reprocess(event=one.event, user=operator, via="api")
        except EventInFlight as exc:
            return exc

    result, one_published = _run(single, queued, django_capture_on_commit_callbacks)
    outcome, other_published = _run(
        lambda: webhook_events_reprocess_bulk(queryset=WebhookEvent.objects.filter(pk=other.event_id), user=operator, via="api"),
        queued, django_capture_on_commit_callbacks,
    )

    assert _state(one, one_published) == _state(other, other_published)
    assert isinstance(result, EventInFlight) == (outcome.acted == 0) == (status == WebhookEvent.Status.PROCESSING)
