import json

import pytest
from django.contrib.auth import get_user_model

from fulfillment.services import catalog_import
from tests.conftest import signed_headers
from webhooks.processing import webhook_event_process
from webhooks.receiving import webhook_event_receive

CATALOG = {
    "products": [
        {"provider": "stripe", "price_id": "price_pro", "entitlements": ["pro", "reports"]},
        {"provider": "stripe", "price_id": "price_addon", "entitlements": ["addon"]},
        {"provider": "stripe", "price_id": "price_export", "entitlements": ["export"]},
    ]
}


@pytest.fixture
def catalog(db):
    catalog_import(data=CATALOG)
    return CATALOG


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", email="alice@example.com")


@pytest.fixture
def deliver(stripe_endpoint, stripe_secret):
    """Store a Stripe event through the real receive service and process it in-process."""

    def deliver(event: dict) -> tuple[str, str | None]:
        body = json.dumps(event).encode()
        result = webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", stripe_secret, body))
        return result.event_id, webhook_event_process(event_id=result.event_id)

    return deliver
