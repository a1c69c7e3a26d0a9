import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from tests.deadletters.factories import dead_letter_build, dead_letter_create, event_create
from webhooks import deadletters
from webhooks.deadletters import (
    DeadLetterClosed,
    DeadLetterNotOpen,
    DeadLetterNotReplayable,
    EventInFlight,
    NoteRequired,
    dead_letter_discard,
    dead_letter_record,
    dead_letter_replay,
    dead_letter_resolve,
    dead_letter_stats,
    webhook_event_reprocess,
)
from webhooks.models import DeadLetter, WebhookEvent
from webhooks.monitoring import dead_letters_watch

TASK = "webhooks.tasks.webhook_events_process"


class UnknownPrice(Exception):
    pass


def _traceback_with_pii() -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "fulfillment/services.py", line 42, in entitlement_grant\n'
        "    buyer = 'jane.doe@example.com' card 4242 4242 4242 4242 from 203.0.113.7\n"
        "UnknownPrice: price price_123 not in catalog (secret whsec_abcdefghijklmnop)\n"
    )


class TestDeadLetterRecord:
    def test_it_stores_one_scrubbed_row_and_marks_the_event_dead(self, stripe_endpoint, audit_calls):
        event = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)

        row = dead_letter_record(
            task_name=TASK, event_id=str(event.id), args=[[str(event.id)]],
            exc=UnknownPrice("price price_123 is not in the catalog; buyer jane.doe@example.com"),
            attempts=5, traceback_text=_traceback_with_pii(),
        )

        row.refresh_from_db()
        event.refresh_from_db()
        assert row.unit_key == f"{TASK}:{event.id}"
        assert (row.status, row.attempts, row.occurrences, row.event_id) == ("open", 5, 1, event.id)
        assert row.error_type == "UnknownPrice"
        assert row.error_message == deadletters.WITHHELD_MESSAGE  # not a payhook error: its message may quote data
        for secret in ("jane.doe@example.com", "4242 4242 4242 4242", "203.0.113.7", "whsec_abcdefghijklmnop"):
            assert secret not in row.traceback
        assert row.traceback == "UnknownPrice\n  fulfillment/services.py:42:entitlement_grant"
        assert (event.status, event.last_error) == ("dead", "UnknownPrice")
        assert audit_calls == [{
            "action": "task.dead_lettered", "event_id": str(event.id),
            "data": {"task": TASK, "error_type": "UnknownPrice", "attempts": 5},
            "subjects": None,  # none given: the caller passes the event's buyer subjects
            "dedup_key": f"dlq:{row.id}:5",
        }]

    def test_recording_the_same_open_failure_twice_keeps_one_row_and_one_audit_key(self, stripe_endpoint, audit_calls):
        event = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)
        kwargs = dict(task_name=TASK, event_id=str(event.id), args=[[str(event.id)]], exc=UnknownPrice("x"), attempts=5)

        first = dead_letter_record(**kwargs)
        second = dead_letter_record(**kwargs)

        assert first.id == second.id
        assert DeadLetter.objects.count() == 1
        assert second.attempts == 5 and second.occurrences == 1
        assert {call["dedup_key"] for call in audit_calls} == {f"dlq:{first.id}:5"}

    def test_a_unit_that_fails_again_after_a_replay_reopens_its_row(self, stripe_endpoint, operator, audit_calls,
                                                                  django_capture_on_commit_callbacks):
        event = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)
        kwargs = dict(task_name=TASK, event_id=str(event.id), args=[[str(event.id)]], attempts=5)
        row = dead_letter_record(exc=UnknownPrice("first"), **kwargs)
        first_failed_at = row.first_failed_at
        with django_capture_on_commit_callbacks():
            dead_letter_replay(dead_letter=row, user=operator)

        reopened = dead_letter_record(exc=ValueError("second"), **kwargs)

        assert reopened.id == row.id and DeadLetter.objects.count() == 1
        assert (reopened.status, reopened.attempts, reopened.occurrences) == ("open", 10, 2)
        assert reopened.error_type == "ValueError"
        assert reopened.first_failed_at == first_failed_at and reopened.last_failed_at > first_failed_at
        dead_keys = [c["dedup_key"] for c in audit_calls if c["action"] == "task.dead_lettered"]
        assert dead_keys == [f"dlq:{row.id}:5", f"dlq:{row.id}:10"]

    def test_work_without_an_event_is_keyed_by_its_arguments(self, db):
        one = dead_letter_record(task_name="notifications.send", event_id=None, args=[7], exc=RuntimeError("x"), attempts=1)
        same = dead_letter_record(task_name="notifications.send", event_id=None, args=[7], exc=RuntimeError("x"), attempts=1)
        other = dead_letter_record(task_name="notifications.send", event_id=None, args=[8], exc=RuntimeError("x"), attempts=1)

        assert one.id == same.id != other.id
        assert one.event_id is None


class TestDeadLetterReplay:
    def test_it_puts_the_event_back_and_enqueues_it_once(self, stripe_endpoint, operator, audit_calls, queued,
                                                         django_capture_on_commit_callbacks):
        row = dead_letter_create(endpoint=stripe_endpoint)
        WebhookEvent.objects.filter(id=row.event_id).update(attempts=5, last_error="UnknownPrice")

        with django_capture_on_commit_callbacks(execute=True):
            dead_letter_replay(dead_letter=row, user=operator, note="price added to the catalog")

        row.refresh_from_db()
        event = WebhookEvent.objects.get(id=row.event_id)
        assert (row.status, row.acted_by, row.note) == ("replayed", operator, "price added to the catalog")
        assert row.acted_at is not None
        assert (event.status, event.attempts, event.last_error) == ("received", 0, "")
        assert queued() == [(TASK, [[str(event.id)]])]
        assert [(c["action"], c["actor"], c["event_id"]) for c in audit_calls] == [
            ("dlq.replayed", str(operator.id), str(event.id))
        ]

    def test_replaying_twice_refuses_the_second_time_and_enqueues_nothing_more(
        self, stripe_endpoint, operator, audit_calls, queued, django_capture_on_commit_callbacks
    ):
        row = dead_letter_create(endpoint=stripe_endpoint)
        with django_capture_on_commit_callbacks(execute=True):
            dead_letter_replay(dead_letter=row, user=operator)

        with pytest.raises(DeadLetterNotOpen, match="only open dead letters can be replayed"):
            with django_capture_on_commit_callbacks(execute=True):
                dead_letter_replay(dead_letter=row, user=operator)

        assert len(queued()) == 1
        assert [c["action"] for c in audit_calls] == ["dlq.replayed"]

    def test_a_dead_letter_without_a_stored_event_cannot_be_replayed(self, db, operator):
        row = dead_letter_build(event=None)
        row.save()
        with pytest.raises(DeadLetterNotReplayable):
            dead_letter_replay(dead_letter=row, user=operator)
        row.refresh_from_db()
        assert row.status == "open"


class TestDeadLetterClose:
    @pytest.mark.parametrize("service", [dead_letter_resolve, dead_letter_discard])
    @pytest.mark.parametrize("note", ["", "   ", None])
    def test_a_note_is_required(self, stripe_endpoint, operator, audit_calls, service, note):
        row = dead_letter_create(endpoint=stripe_endpoint)
        with pytest.raises(NoteRequired) as raised:
            service(dead_letter=row, user=operator, note=note)
        assert raised.value.code == "note_required"
        row.refresh_from_db()
        assert row.status == "open" and audit_calls == []

    @pytest.mark.parametrize(
        ("service", "status", "action"),
        [(dead_letter_resolve, "resolved", "dlq.resolved"), (dead_letter_discard, "discarded", "dlq.discarded")],
    )
    def test_it_closes_the_row_and_keeps_the_note_in_its_audit_entry(self, stripe_endpoint, operator, audit_calls,
                                                                     service, status, action):
        row = dead_letter_create(endpoint=stripe_endpoint)

        service(dead_letter=row, user=operator, note="  refunded by hand, ticket OPS-12  ")

        row.refresh_from_db()
        assert (row.status, row.note, row.acted_by) == (status, "refunded by hand, ticket OPS-12", operator)
        assert [(c["action"], c["actor"]) for c in audit_calls] == [(action, str(operator.id))]
        assert audit_calls[0]["data"] == {"dead_letter": row.id, "task": row.task_name, "note": "refunded by hand, ticket OPS-12"}
        stored = AuditEntry.objects.get(action=action)
        assert (stored.actor, stored.data["note"]) == (str(operator.id), "refunded by hand, ticket OPS-12")
        with pytest.raises(DeadLetterClosed):
            service(dead_letter=row, user=operator, note="again")

    @pytest.mark.parametrize(
        ("service", "status", "action"),
        [(dead_letter_resolve, "resolved", "dlq.resolved"), (dead_letter_discard, "discarded", "dlq.discarded")],
    )
    def test_an_email_or_card_in_the_note_never_lands_in_the_audit_log_in_clear(self, stripe_endpoint, operator, service,
                                                                              status, action):
        row = dead_letter_create(endpoint=stripe_endpoint)

        service(dead_letter=row, user=operator, note="buyer jane.doe@example.com paid by 4242 4242 4242 4242, fixed by hand")

        stored = AuditEntry.objects.get(action=action)
        assert stored.data["note"] == "buyer [email] paid by [card], fixed by hand"
        assert "jane.doe" not in str(stored.data) and "4242" not in str(stored.data)

    def test_a_discarded_row_cannot_be_replayed(self, stripe_endpoint, operator):
        row = dead_letter_create(endpoint=stripe_endpoint)
        dead_letter_discard(dead_letter=row, user=operator, note="test event from the provider dashboard")
        with pytest.raises(DeadLetterNotOpen):
            dead_letter_replay(dead_letter=row, user=operator)


class TestWebhookEventReprocess:
    def test_it_requeues_a_finished_event_and_marks_its_open_dead_letter_replayed(
        self, stripe_endpoint, operator, audit_calls, queued, django_capture_on_commit_callbacks
    ):
        row = dead_letter_create(endpoint=stripe_endpoint)
        with django_capture_on_commit_callbacks(execute=True):
            event = webhook_event_reprocess(event=row.event, user=operator)

        row.refresh_from_db()
        assert (event.status, event.attempts) == ("received", 0)
        assert row.status == "replayed" and row.acted_by == operator
        assert queued() == [(TASK, [[str(event.id)]])]
        assert [(c["action"], c["actor"], c["data"]["previous_status"]) for c in audit_calls] == [
            ("event.reprocessed", str(operator.id), "dead")
        ]

    @pytest.mark.parametrize("status", [WebhookEvent.Status.RECEIVED, WebhookEvent.Status.PROCESSING])
    def test_an_event_in_flight_is_refused(self, stripe_endpoint, operator, audit_calls, status):
        event = event_create(endpoint=stripe_endpoint, status=status)
        with pytest.raises(EventInFlight):
            webhook_event_reprocess(event=event, user=operator)
        event.refresh_from_db()
        assert event.status == status and audit_calls == []


class TestStatsAndWatch:
    def test_stats_report_depth_and_the_oldest_unfinished_event(self, stripe_endpoint):
        dead_letter_create(endpoint=stripe_endpoint)
        dead_letter_create(endpoint=stripe_endpoint, status=DeadLetter.Status.DISCARDED)
        event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.RECEIVED,
                     received_at=timezone.now() - timedelta(minutes=30))
        event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSED,
                     received_at=timezone.now() - timedelta(days=3))

        stats = dead_letter_stats()

        assert stats["open"] == 1
        assert 1790 <= stats["oldest_unprocessed_event_age_seconds"] < 1900

    def test_stats_are_empty_on_a_quiet_system(self, db):
        assert dead_letter_stats()["open"] == 0
        assert dead_letter_stats()["oldest_unprocessed_event_age_seconds"] is None

    def test_the_watch_warns_past_its_thresholds_without_content(self, stripe_endpoint, settings, caplog):
        settings.DLQ_WARN_DEPTH = 2
        settings.DLQ_WARN_OLDEST_SECONDS = 600
        dead_letter_create(endpoint=stripe_endpoint)
        with caplog.at_level(logging.WARNING, logger="webhooks.monitoring"):
            dead_letters_watch()
        assert caplog.records == []

        dead_letter_create(endpoint=stripe_endpoint)
        event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.RECEIVED,
                     received_at=timezone.now() - timedelta(hours=1))
        with caplog.at_level(logging.WARNING, logger="webhooks.monitoring"):
            dead_letters_watch()
        messages = [record.getMessage() for record in caplog.records]
        assert any("dead-letter queue depth 2" in message for message in messages)
        assert any("oldest unprocessed event" in message for message in messages)
        assert not any("price" in message or "evt_" in message for message in messages)


def test_bulk_replay_counts_what_it_skipped(stripe_endpoint, operator, django_capture_on_commit_callbacks):
    open_row = dead_letter_create(endpoint=stripe_endpoint)
    dead_letter_create(endpoint=stripe_endpoint, status=DeadLetter.Status.RESOLVED)
    with django_capture_on_commit_callbacks():
        outcome = deadletters.dead_letter_replay_bulk(queryset=DeadLetter.objects.all(), user=operator)
    assert (outcome.acted, outcome.skipped) == (1, 1)
    open_row.refresh_from_db()
    assert open_row.status == "replayed"


def test_an_operator_note_is_stored_on_the_dead_letter_scrubbed(stripe_endpoint, operator):
    row = dead_letter_resolve(
        dead_letter=dead_letter_create(endpoint=stripe_endpoint), user=operator,
        note="refunded by hand; mail carol@example.org, card 4242 4242 4242 4242",
    )

    row.refresh_from_db()
    assert row.note == "refunded by hand; mail [email], card [card]"
