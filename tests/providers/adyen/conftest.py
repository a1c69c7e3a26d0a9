import pytest
from django.contrib.auth import get_user_model

from fulfillment.services import catalog_import
from providers.adyen.samples import SAMPLE_PRICE_ID
from tests.providers.adyen.notifications import KEY
from webhooks.endpoints import webhook_endpoint_create


@pytest.fixture
def adyen_endpoint(db):
    return webhook_endpoint_create(slug="adyen", scheme="adyen", secret=KEY, mode="live")


@pytest.fixture
def adyen_catalog(db):
    catalog_import(data={"products": [
        {"provider": "adyen", "price_id": "adyen-price-pro", "entitlements": ["pro", "reports"]},
        {"provider": "adyen", "price_id": SAMPLE_PRICE_ID, "entitlements": ["pro"]},
    ]})


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", email="alice@example.com")
