from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.deadletters.conftest import token_client
from tests.deadletters.factories import dead_letter_create
from webhooks.models import DeadLetter, WebhookEvent

LIST = "/api/v1/dead-letters/"


@pytest.fixture
def api(operator):
    return token_client(operator)


class TestAccess:
    def test_anonymous_requests_get_401(self, db):
        assert APIClient().get(LIST).status_code == 401

    def test_support_and_services_are_refused(self, support_user, services_user, stripe_endpoint):
        row = dead_letter_create(endpoint=stripe_endpoint)
        for user in (support_user, services_user):
            client = token_client(user)
            assert client.get(LIST).status_code == 403
            assert client.get(f"{LIST}{row.id}/").status_code == 403
            assert client.post(f"{LIST}{row.id}/replay/").status_code == 403
            assert client.post(f"{LIST}{row.id}/discard/", {"note": "x"}, format="json").status_code == 403
        row.refresh_from_db()
        assert row.status == "open"


class TestList:
    def test_it_filters_by_status_task_and_time_and_pages_with_a_cursor(self, api, stripe_endpoint):
        now = timezone.now()
        old = dead_letter_create(endpoint=stripe_endpoint, failed_at=now - timedelta(days=2))
        recent = [dead_letter_create(endpoint=stripe_endpoint, failed_at=now - timedelta(minutes=i)) for i in range(3)]
        dead_letter_create(endpoint=stripe_endpoint, status=DeadLetter.Status.DISCARDED)
        other_task = dead_letter_create(endpoint=stripe_endpoint, task_name="notifications.tasks.notification_send")

        body = api.get(LIST, {"status": "open", "page_size": 2}).json()
        assert len(body["results"]) == 2 and body["next"]
        rest = api.get(body["next"]).json()
        open_ids = {item["id"] for item in body["results"] + rest["results"]}
        while rest["next"]:
            rest = api.get(rest["next"]).json()
            open_ids |= {item["id"] for item in rest["results"]}
        assert open_ids == {old.id, other_task.id, *(row.id for row in recent)}

        since = (now - timedelta(hours=1)).isoformat()
        filtered = api.get(LIST, {"task": "webhooks.tasks.webhook_events_process", "since": since, "status": "open"}).json()
        assert {item["id"] for item in filtered["results"]} == {row.id for row in recent}
        until = api.get(LIST, {"until": (now - timedelta(days=1)).isoformat()}).json()
        assert [item["id"] for item in until["results"]] == [old.id]

    def test_items_show_the_event_and_error_but_not_the_traceback(self, api, stripe_endpoint):
        row = dead_letter_create(endpoint=stripe_endpoint)
        item = api.get(LIST).json()["results"][0]
        assert item["event_id"] == str(row.event_id)
        assert item["event_type"] == "invoice.paid"
        assert item["idempotency_key"] == row.event.idempotency_key
        assert (item["task"], item["error_type"], item["status"], item["attempts"]) == (
            row.task_name, "UnknownPrice", "open", 3
        )
        assert "traceback" not in item
        detail = api.get(f"{LIST}{row.id}/").json()
        assert "UnknownPrice" in detail["traceback"]


class TestActions:
    def test_replay_requeues_the_event(self, api, operator, stripe_endpoint, queued, django_capture_on_commit_callbacks):
        row = dead_letter_create(endpoint=stripe_endpoint)

        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(f"{LIST}{row.id}/replay/", {"note": "catalog fixed"}, format="json")

        assert response.status_code == 200, response.content
        assert response.json()["status"] == "replayed"
        row.refresh_from_db()
        assert (row.status, row.acted_by_id, row.note) == ("replayed", operator.id, "catalog fixed")
        assert WebhookEvent.objects.get(id=row.event_id).status == "received"
        assert queued() == [("webhooks.tasks.webhook_events_process", [[str(row.event_id)]])]

    def test_replaying_a_closed_row_says_why(self, api, stripe_endpoint):
        row = dead_letter_create(endpoint=stripe_endpoint, status=DeadLetter.Status.DISCARDED)
        response = api.post(f"{LIST}{row.id}/replay/")
        assert response.status_code == 409
        assert response.json()["error"] == "dead_letter_not_open"
        assert "discarded" in response.json()["detail"]

    @pytest.mark.parametrize("body", [{}, {"note": ""}, {"note": "   "}])
    def test_discard_without_a_note_is_400_note_required(self, api, stripe_endpoint, body):
        row = dead_letter_create(endpoint=stripe_endpoint)
        response = api.post(f"{LIST}{row.id}/discard/", body, format="json")
        assert response.status_code == 400
        assert response.json()["error"] == "note_required"
        row.refresh_from_db()
        assert row.status == "open"

    def test_discard_with_a_note_closes_the_row(self, api, operator, stripe_endpoint, audit_calls):
        row = dead_letter_create(endpoint=stripe_endpoint)
        response = api.post(f"{LIST}{row.id}/discard/", {"note": "provider test event"}, format="json")
        assert response.status_code == 200
        assert response.json()["note"] == "provider test event"
        row.refresh_from_db()
        assert (row.status, row.acted_by_id) == ("discarded", operator.id)
        assert [(c["action"], c["actor"]) for c in audit_calls] == [("dlq.discarded", str(operator.id))]

    def test_an_unknown_id_is_404(self, api, db):
        assert api.post(f"{LIST}999999/replay/").status_code == 404
