"""Every refusal on /webhooks/ is counted once in payhook_webhook_refused_total by its error code, and
logged without the client's text: an unknown slug is counted under "" and never reaches a log line."""

import json
import logging

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from tests.conftest import post_json, signed_headers


def _refused(endpoint: str, reason: str) -> float:
    return REGISTRY.get_sample_value("payhook_webhook_refused_total", {"endpoint": endpoint, "reason": reason}) or 0.0


@pytest.mark.django_db
class TestRefusalsAreCounted:
    def test_an_unknown_slug_is_counted_under_an_empty_endpoint_and_its_text_is_not_logged(self, client, caplog):
        before = _refused("", "unknown_endpoint")
        with caplog.at_level(logging.INFO):
            response = client.post("/webhooks/Jenny-Rosen/", b"{}", content_type="application/json")

        assert response.status_code == 404
        assert _refused("", "unknown_endpoint") == before + 1
        assert _refused("Jenny-Rosen", "unknown_endpoint") == 0
        assert "Jenny" not in caplog.text and "webhook refused" in caplog.text

    def test_an_oversized_body_is_counted(self, client, stripe_endpoint, settings):
        settings.WEBHOOK_MAX_BODY_BYTES = 100
        before = _refused("stripe", "payload_too_large")

        response = client.post("/webhooks/stripe/", b"{" + b" " * 200 + b"}", content_type="application/json")

        assert response.status_code == 413
        assert _refused("stripe", "payload_too_large") == before + 1

    def test_a_verified_body_that_is_no_event_is_counted_as_invalid_payload(self, client, stripe_endpoint, stripe_secret):
        before = _refused("stripe", "invalid_payload")
        body = json.dumps([1, 2]).encode()

        response = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))

        assert response.status_code == 400 and response.json() == {"error": "invalid_payload"}
        assert _refused("stripe", "invalid_payload") == before + 1

    def test_a_bad_signature_is_counted_once(self, client, stripe_endpoint):
        before = _refused("stripe", "invalid_signature")
        body = b'{"id": "evt_1", "type": "invoice.paid"}'

        response = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", "whsec_other", body))

        assert response.status_code == 400
        assert _refused("stripe", "invalid_signature") == before + 1


@pytest.mark.django_db
def test_a_csrf_refusal_does_not_log_the_clients_path(caplog):
    with caplog.at_level(logging.DEBUG):
        response = Client(enforce_csrf_checks=True).post("/admin/Jenny%20Rosen/", {"a": "b"})

    assert response.status_code == 403
    assert "Jenny" not in caplog.text
