import pytest

pytestmark = pytest.mark.django_db


def test_without_a_token_a_loopback_scraper_is_answered(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert b"payhook_" in response.content


@pytest.mark.parametrize("address", ["10.0.0.5", "203.0.113.7", "::ffff:10.0.0.5", ""])
def test_without_a_token_anyone_else_is_refused(client, settings, address):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR=address, headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == 403
    assert b"payhook_" not in response.content


def test_with_a_token_the_bearer_is_required_even_from_loopback(client, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"

    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Token s3cret-scrape-token"}).status_code == 401
    refused = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token-and-more"})
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")

    answered = client.get("/metrics", REMOTE_ADDR="203.0.113.7", headers={"Authorization": "Bearer s3cret-scrape-token"})
    assert answered.status_code == 200 and b"payhook_" in answered.content
