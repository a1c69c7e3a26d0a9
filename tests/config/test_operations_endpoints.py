import pytest
import yaml
from django.core.management import call_command


def test_healthz_answers_without_touching_anything(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_the_database_and_the_broker(client, broker_flushed):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_answers_503_when_the_broker_is_unreachable(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["broker"] != "ok"


@pytest.mark.django_db
def test_metrics_are_prometheus_text_with_the_ingestion_counters(client, stripe_endpoint, post_stripe):
    from providers.stripe import samples

    post_stripe(samples.stripe_event("invoice.paid"))
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert 'payhook_webhook_events_total{endpoint="stripe",outcome="accepted"}' in response.content.decode()


def test_openapi_schema_is_valid_and_names_every_contract_path(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    paths = set(yaml.safe_load(out.read_text())["paths"])
    assert {
        "/api/v1/events/", "/api/v1/events/{id}/", "/api/v1/entitlements/", "/api/v1/notifications/",
        "/api/v1/users/{user_id}/notification-preferences/", "/api/v1/audit/", "/api/v1/dead-letters/",
        "/api/v1/dead-letters/{id}/replay/", "/api/v1/dead-letters/{id}/discard/",
    } <= paths
