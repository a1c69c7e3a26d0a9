"""Sample Adyen notifications built on the item examples in `adyen-notifications.json` (shaped like
Adyen's published webhook examples; the AUTHORISATION one holds the fields of Adyen's published HMAC
test vector). Used by `send_test_webhook`, the tests and the benchmarks."""

import copy
import functools
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

SAMPLE_PRICE_ID = "adyen-sample-pro"  # the AUTHORISATION sample's additionalData["metadata.price_id"]


@functools.cache
def adyen_items() -> dict:
    items = json.loads((Path(__file__).parent / "adyen-notifications.json").read_text())
    items.pop("_comment", None)
    return items


def adyen_item(name: str) -> dict:
    """A copy of one example item: `AUTHORISATION`, `AUTHORISATION:false` (refused), `REFUND`, …"""
    try:
        return copy.deepcopy(adyen_items()[name])
    except KeyError:
        raise KeyError(f"no Adyen sample for {name!r}; known: {', '.join(sorted(adyen_items()))}") from None


def adyen_notification(*items: dict, live: bool = True) -> dict:
    """A notification request as Adyen posts it. `live` defaults to true, the mode of a default
    endpoint (the published examples are test notifications)."""
    return {"live": "true" if live else "false", "notificationItems": [{"NotificationRequestItem": item} for item in items]}


def psp_reference_new() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(16))


def adyen_sample(event_type: str, *, live: bool = True) -> dict:
    """A fresh one-item notification of `event_type` (an eventCode; `AUTHORISATION:false` for a
    refused payment): new pspReference, eventDate now, so each send is a new event. Unsigned."""
    item = adyen_item(event_type)
    item["pspReference"] = psp_reference_new()
    item["eventDate"] = datetime.now(UTC).replace(microsecond=0).isoformat()
    return adyen_notification(item, live=live)
