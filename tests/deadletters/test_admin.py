import pytest
from django.urls import reverse

from tests.deadletters.factories import dead_letter_create, event_create, staff_user_create
from webhooks.models import DeadLetter, WebhookEvent

CHANGELIST = "/admin/webhooks/deadletter/"


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


class TestWhoSeesWhat:
    def test_support_cannot_see_dead_letters_anywhere(self, client, support_user, stripe_endpoint):
        row = dead_letter_create(endpoint=stripe_endpoint)
        client.force_login(support_user)

        assert client.get(CHANGELIST).status_code == 403
        assert client.get(f"{CHANGELIST}{row.id}/change/").status_code == 403
        index = client.get("/admin/").content.decode()
        assert "Dead letters" not in index and "dead-letter-stats" not in index
        # Support reads events but may not reprocess them.
        events = client.get("/admin/webhooks/webhookevent/")
        assert events.status_code == 200
        assert b'value="reprocess"' not in events.content
        response = client.post("/admin/webhooks/webhookevent/", {
            "action": "reprocess", "_selected_action": [str(row.event_id)], "index": 0,
        })
        assert WebhookEvent.objects.get(id=row.event_id).status == "dead"
        assert response.status_code in (200, 302)

    def test_support_stays_out_even_if_given_the_model_permissions(self, client, support_user, stripe_endpoint):
        from django.contrib.auth.models import Permission

        support_user.user_permissions.add(*Permission.objects.filter(codename__in=["view_deadletter", "change_deadletter"]))
        client.force_login(support_user)
        assert client.get(CHANGELIST).status_code == 403

    def test_the_index_shows_dlq_depth_and_oldest_unprocessed_age_to_operators(self, operator_client, stripe_endpoint):
        dead_letter_create(endpoint=stripe_endpoint)
        dead_letter_create(endpoint=stripe_endpoint)
        page = operator_client.get("/admin/").content.decode()
        assert '<td id="dlq-depth">2</td>' in page
        assert 'id="oldest-unprocessed-age">none waiting<' in page


class TestList:
    def test_it_lists_and_filters_and_searches(self, operator_client, stripe_endpoint):
        mine = dead_letter_create(endpoint=stripe_endpoint, error_type="UnknownPrice")
        other = dead_letter_create(endpoint=stripe_endpoint, error_type="ValidationError")
        closed = dead_letter_create(endpoint=stripe_endpoint, status=DeadLetter.Status.DISCARDED)

        page = operator_client.get(CHANGELIST)
        assert page.status_code == 200
        for text in ("UnknownPrice", "ValidationError", "invoice.paid", "webhooks.tasks.webhook_events_process"):
            assert text in page.content.decode()

        def ids(**params):
            response = operator_client.get(CHANGELIST, params)
            return {row.pk for row in response.context["cl"].result_list}

        assert ids(status__exact="open") == {mine.id, other.id}
        assert ids(error_type="ValidationError") == {other.id}
        assert ids(q=str(mine.event_id)) == {mine.id}
        assert ids(q=closed.event.idempotency_key) == {closed.id}
        assert ids(q="catalog") == {mine.id, other.id, closed.id}

    def test_the_detail_page_shows_traceback_event_link_and_canonical_events(self, operator_client, stripe_endpoint):
        row = dead_letter_create(endpoint=stripe_endpoint)
        page = operator_client.get(f"{CHANGELIST}{row.id}/change/").content.decode()
        assert "UnknownPrice: price not in the catalog" in page
        assert reverse("admin:webhooks_webhookevent_change", args=[row.event_id]) in page
        assert "Canonical events" in page
        assert 'id="detail-replay"' in page and 'id="detail-discard"' in page


class TestActions:
    def test_replay_action_replays_open_rows_and_skips_others(self, operator_client, operator, stripe_endpoint,
                                                             django_capture_on_commit_callbacks, queued):
        open_row = dead_letter_create(endpoint=stripe_endpoint)
        closed = dead_letter_create(endpoint=stripe_endpoint, status=DeadLetter.Status.RESOLVED)

        with django_capture_on_commit_callbacks(execute=True):
            response = operator_client.post(CHANGELIST, {
                "action": "replay", "_selected_action": [open_row.id, closed.id], "index": 0,
            }, follow=True)

        assert "Replayed 1 dead letter(s); skipped 1" in response.content.decode()
        open_row.refresh_from_db()
        closed.refresh_from_db()
        assert (open_row.status, open_row.acted_by) == ("replayed", operator)
        assert closed.status == "resolved"
        assert queued() == [("webhooks.tasks.webhook_events_process", [[str(open_row.event_id)]])]

    def test_discard_asks_for_a_note_first_then_applies_it(self, operator_client, operator, stripe_endpoint, audit_calls):
        row = dead_letter_create(endpoint=stripe_endpoint)
        form = operator_client.post(CHANGELIST, {"action": "discard", "_selected_action": [row.id], "index": 0})
        assert form.status_code == 200
        assert 'id="dead-letter-note-form"' in form.content.decode()
        row.refresh_from_db()
        assert row.status == "open"

        empty = operator_client.post(CHANGELIST, {"action": "discard", "_selected_action": [row.id], "apply": "Discard", "note": " "})
        assert empty.status_code == 200 and "This field is required" in empty.content.decode()
        row.refresh_from_db()
        assert row.status == "open" and audit_calls == []

        done = operator_client.post(CHANGELIST, {
            "action": "discard", "_selected_action": [row.id], "apply": "Discard", "note": "provider test event",
        })
        assert done.status_code == 302
        row.refresh_from_db()
        assert (row.status, row.note, row.acted_by) == ("discarded", "provider test event", operator)
        assert [c["action"] for c in audit_calls] == ["dlq.discarded"]

    def test_a_superuser_resolving_leaves_one_audit_entry_with_the_note_scrubbed(self, client, stripe_endpoint):
        from django.contrib.auth import get_user_model

        from audit.models import AuditEntry

        admin_user = get_user_model().objects.create_superuser("root", email="root@example.com", password="x")
        client.force_login(admin_user)
        row = dead_letter_create(endpoint=stripe_endpoint)

        done = client.post(CHANGELIST, {
            "action": "resolve", "_selected_action": [row.id], "apply": "Resolve",
            "note": "fixed by hand; customer bob@example.org asked",
        })

        assert done.status_code == 302
        entries = list(AuditEntry.objects.filter(action="dlq.resolved"))
        assert len(entries) == 1
        assert entries[0].actor == str(admin_user.pk)
        assert entries[0].data == {"dead_letter": row.id, "task": row.task_name, "note": "fixed by hand; customer [email] asked"}

    def test_select_all_across_pages_resolves_every_filtered_row(self, operator_client, stripe_endpoint):
        keep = dead_letter_create(endpoint=stripe_endpoint, error_type="Other")
        rows = [dead_letter_create(endpoint=stripe_endpoint) for _ in range(3)]
        url = f"{CHANGELIST}?error_type=UnknownPrice"

        form = operator_client.post(url, {"action": "resolve", "select_across": "1", "index": 0, "_selected_action": [rows[0].id]})
        assert "<strong>3</strong>" in form.content.decode()
        operator_client.post(url, {
            "action": "resolve", "select_across": "1", "_selected_action": [rows[0].id],
            "apply": "Resolve", "note": "price added, replayed by hand",
        })

        assert set(DeadLetter.objects.filter(status="resolved").values_list("id", flat=True)) == {r.id for r in rows}
        keep.refresh_from_db()
        assert keep.status == "open"

    def test_event_admin_reprocess_action_requeues_and_audits(self, operator_client, operator, stripe_endpoint,
                                                              audit_calls, django_capture_on_commit_callbacks, queued):
        done = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSED)
        busy = event_create(endpoint=stripe_endpoint, status=WebhookEvent.Status.PROCESSING)

        with django_capture_on_commit_callbacks(execute=True):
            response = operator_client.post("/admin/webhooks/webhookevent/", {
                "action": "reprocess", "_selected_action": [str(done.id), str(busy.id)], "index": 0,
            }, follow=True)

        assert "Reprocessing 1 event(s); skipped 1" in response.content.decode()
        done.refresh_from_db()
        busy.refresh_from_db()
        assert (done.status, busy.status) == ("received", "processing")
        assert [(c["action"], c["actor"], c["event_id"]) for c in audit_calls] == [
            ("event.reprocessed", str(operator.id), str(done.id))
        ]
        assert queued() == [("webhooks.tasks.webhook_events_process", [[str(done.id)]])]


class TestRawPayload:
    def test_only_holders_of_view_raw_payload_see_the_decrypted_body(self, client, operator, stripe_endpoint):
        from django.contrib.auth.models import Permission

        event = event_create(endpoint=stripe_endpoint, body=b'{"id": "evt_raw_marker", "object": "event"}')
        url = f"/admin/webhooks/webhookevent/{event.id}/change/"
        client.force_login(operator)
        page = client.get(url)
        assert page.status_code == 200 and "evt_raw_marker" not in page.content.decode()

        auditor = staff_user_create("rita-raw", "operators")
        auditor.user_permissions.add(Permission.objects.get(codename="view_raw_payload"))
        client.force_login(auditor)
        assert "evt_raw_marker" in client.get(url).content.decode()
        assert "evt_raw_marker" not in client.get("/admin/webhooks/webhookevent/").content.decode()
