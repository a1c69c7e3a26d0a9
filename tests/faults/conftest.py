import json

import pytest
from django.contrib.auth import get_user_model

from fulfillment.services import catalog_import
from tests.conftest import as_client_headers, signed_headers
from tests.fulfillment import stripe_events as se
from tests.fulfillment.conftest import CATALOG


@pytest.fixture
def fault_env(worker_env, tmp_path):
    """Worker environment with mail written to files, so the test can count what really left."""
    return {
        **worker_env,
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(tmp_path / "mail"),
    }


@pytest.fixture
def purchases(transactional_db, broker_flushed):
    """N buyers with a paid checkout each (2 entitlements, 2 notifications, several audit entries)."""
    catalog_import(data=CATALOG)

    def make(n: int, *, created: int = 1_790_000_000) -> list[dict]:
        User = get_user_model()
        events = []
        for i in range(n):
            user = User.objects.create_user(f"buyer{i}", email=f"buyer{i}@example.com")
            events.append(
                se.checkout_completed(session_id=f"cs_{i}", created=created + i, price_id="price_pro", user_id=user.id,
                                      customer=f"cus_{i}", payment_intent=f"pi_{i}")
            )
        return events

    return make


@pytest.fixture
def post_events(client, stripe_endpoint, stripe_secret):
    def post(events: list[dict]) -> list[str]:
        ids = []
        for event in events:
            body = json.dumps(event).encode()
            response = client.generic("POST", "/webhooks/stripe/", body, content_type="application/json",
                                      **as_client_headers(signed_headers("stripe", stripe_secret, body)))
            assert response.status_code == 200, response.content
            ids.append(response.json()["event_id"])
        return ids

    return post
