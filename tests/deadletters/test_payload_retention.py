"""Raw-payload retention (issue 13): finished old events lose body and headers, audited once a run;
replaying such an event refuses with the reason everywhere an operator can ask for it."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEntry
from tests.deadletters.conftest import token_client
from tests.deadletters.factories import dead_letter_create, event_create, staff_user_create
from webhooks import deadletters
from webhooks.models import DeadLetter, WebhookEvent
from webhooks.retention import PayloadRemoved, event_payloads_remove

S = WebhookEvent.Status
REASON = "raw payload removed by the retention policy"


@pytest.fixture(autouse=True)
def retention_30_days(settings):
    settings.RAW_PAYLOAD_RETENTION_DAYS = 30


def _old(endpoint, status, days=31):
    return event_create(endpoint=endpoint, status=status, received_at=timezone.now() - timedelta(days=days))


def _removed_entries():
    return list(AuditEntry.objects.filter(action="event.payloads_removed"))


class TestRemoval:
    def test_only_finished_events_past_retention_lose_their_payload(self, stripe_endpoint):
        finished = [_old(stripe_endpoint, status) for status in (S.PROCESSED, S.IGNORED, S.DEAD)]
        waiting = [_old(stripe_endpoint, status) for status in (S.RECEIVED, S.PROCESSING, S.FAILED)]
        recent = _old(stripe_endpoint, S.PROCESSED, days=29)

        assert event_payloads_remove() == 3

        for event in finished:
            event.refresh_from_db()
            assert (bytes(event.body_encrypted), bytes(event.headers_encrypted)) == (b"", b"")
            assert event.payload_removed_at is not None
            assert event.content_hash == "0" * 64 and event.status in (S.PROCESSED, S.IGNORED, S.DEAD)
        for event in [*waiting, recent]:
            event.refresh_from_db()
            assert bytes(event.body_encrypted) != b"" and event.payload_removed_at is None

    def test_one_audit_entry_per_run_with_counts_and_cutoff_only(self, stripe_endpoint):
        for _ in range(5):
            _old(stripe_endpoint, S.PROCESSED)

        assert event_payloads_remove(batch_size=2) == 5  # three batches, one entry
        assert event_payloads_remove() == 0  # nothing left: no second entry

        (entry,) = _removed_entries()
        assert entry.data["removed"] == 5 and entry.data["retention_days"] == 30
        assert set(entry.data) == {"removed", "cutoff", "retention_days"}

    @pytest.mark.parametrize("days", [0, None])
    def test_nothing_is_removed_when_retention_is_off(self, stripe_endpoint, settings, days):
        settings.RAW_PAYLOAD_RETENTION_DAYS = days
        event = _old(stripe_endpoint, S.PROCESSED, days=3650)

        assert event_payloads_remove() == 0

        event.refresh_from_db()
        assert event.payload_removed_at is None and bytes(event.body_encrypted) != b""
        assert _removed_entries() == []

    def test_empty_setting_means_keep_forever(self, monkeypatch):
        import importlib

        import config.settings as project_settings

        monkeypatch.setenv("RAW_PAYLOAD_RETENTION_DAYS", "")
        try:
            assert importlib.reload(project_settings).RAW_PAYLOAD_RETENTION_DAYS == 0
        finally:
            monkeypatch.undo()
            importlib.reload(project_settings)


@pytest.fixture
def removed(stripe_endpoint):
    """An old dead event with an open dead letter, its payload removed by retention."""
    row = dead_letter_create(endpoint=stripe_endpoint)
    WebhookEvent.objects.filter(id=row.event_id).update(received_at=timezone.now() - timedelta(days=40))
    assert event_payloads_remove() == 1
    row.refresh_from_db()
    return row


class TestReplayRefused:
    def test_the_services_refuse_with_the_reason(self, removed, operator):
        with pytest.raises(PayloadRemoved, match=REASON):
            deadletters.dead_letter_replay(dead_letter=removed, user=operator)
        with pytest.raises(PayloadRemoved, match=REASON):
            deadletters.webhook_event_reprocess(event=removed.event, user=operator)
        removed.refresh_from_db()
        assert removed.status == DeadLetter.Status.OPEN and removed.event.status == S.DEAD

    def test_the_api_answers_payload_removed(self, removed, operator):
        response = token_client(operator).post(f"/api/v1/dead-letters/{removed.id}/replay/")

        assert response.status_code == 409
        assert response.json()["error"] == "payload_removed"
        assert REASON in str(response.json())

    def test_replay_events_says_why(self, removed):
        now = timezone.now()
        args = ["--endpoint", "stripe", "--since", (now - timedelta(days=60)).isoformat(), "--until", now.isoformat()]
        with pytest.raises(CommandError, match=REASON):
            call_command("replay_events", *args, stdout=StringIO(), stderr=StringIO())

    def test_replay_events_skips_them_among_others_and_says_so(self, removed, stripe_endpoint):
        event_create(endpoint=stripe_endpoint, status=S.PROCESSED, received_at=timezone.now() - timedelta(days=2))
        now = timezone.now()
        out = StringIO()
        call_command("replay_events", "--endpoint", "stripe", "--since", (now - timedelta(days=60)).isoformat(),
                     "--until", now.isoformat(), stdout=out, stderr=StringIO())

        assert f"skipping 1 events: {REASON}" in out.getvalue()
        assert "re-queued 1 events" in out.getvalue()
        assert WebhookEvent.objects.get(id=removed.event_id).status == S.DEAD

    def test_the_admin_actions_say_why(self, client, operator, removed):
        client.force_login(operator)
        replay = client.post("/admin/webhooks/deadletter/", {
            "action": "replay", "_selected_action": [removed.id], "index": 0}, follow=True)
        reprocess = client.post("/admin/webhooks/webhookevent/", {
            "action": "reprocess", "_selected_action": [str(removed.event_id)], "index": 0}, follow=True)

        assert f"Skipped 1 dead letter(s): {REASON}" in replay.content.decode()
        assert f"Skipped 1 event(s): {REASON}" in reprocess.content.decode()
        assert WebhookEvent.objects.get(id=removed.event_id).status == S.DEAD

    def test_the_raw_payload_view_says_it_was_removed(self, client, removed):
        from django.contrib.auth.models import Permission

        auditor = staff_user_create("rita-raw", "operators")
        auditor.user_permissions.add(Permission.objects.get(codename="view_raw_payload"))
        client.force_login(auditor)
        page = client.get(f"/admin/webhooks/webhookevent/{removed.event_id}/change/")

        assert page.status_code == 200 and REASON in page.content.decode()


def test_beat_runs_retention_and_the_partitions_ahead(stripe_endpoint, settings):
    from config.celery_app import app
    from webhooks import tasks

    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"webhooks.tasks.event_payloads_remove", "webhooks.tasks.event_partitions_ensure"} <= scheduled
    assert {"webhooks.tasks.event_payloads_remove", "webhooks.tasks.event_partitions_ensure"} <= set(app.tasks)
    old = _old(stripe_endpoint, S.PROCESSED)

    assert tasks.event_payloads_remove() == 1 and tasks.event_partitions_ensure() == 0  # all exist already

    old.refresh_from_db()
    assert old.payload_removed_at is not None
