"""Adyen notifications for the tests, built on the package's examples and signed by Adyen's own
Python library (`Adyen.util.generate_notification_sig`), never by the scheme under test."""

import copy
import json

from Adyen.util import generate_notification_sig

from providers.adyen import samples

# Adyen's published HMAC test vector (docs.adyen.com, "Verify HMAC signatures").
VECTOR_KEY = "DFB1EB5485895CFA84146406857104ABB4CBCABDC8AAF103A624C8F6A3EAAB00"
VECTOR_SIGNED = "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
VECTOR_SIGNATURE = "Ny9gS2veKo5E4w8/OL6xz1/wvT/hYkAXy1xNc/QvO4I="

KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
OTHER_KEY = "3A1F0E9D8C7B6A5948372615F4E3D2C1B0A9988776655443322110FFEEDDCCBB"


def item(name: str = "AUTHORISATION", **fields) -> dict:
    """One example item with `fields` replaced; `additional` updates its additionalData."""
    result = samples.adyen_item(name)
    result["additionalData"].update(fields.pop("additional", {}))
    result.update(fields)
    return result


def sdk_signed(notification_item: dict, key: str = KEY) -> dict:
    """The item with additionalData.hmacSignature as Adyen's library computes it."""
    signed = copy.deepcopy(notification_item)
    unsigned = {k: v for k, v in signed.items() if k != "additionalData"}
    signed.setdefault("additionalData", {})["hmacSignature"] = generate_notification_sig(unsigned, key).decode()
    return signed


def body(*items: dict, live: bool = True, key: str = KEY) -> bytes:
    """A notification request of `items`, each signed by Adyen's library with `key`."""
    return json.dumps(samples.adyen_notification(*(sdk_signed(i, key) for i in items), live=live)).encode()


def key_of(notification_item: dict) -> str:
    return f"{notification_item['eventCode']}:{notification_item['pspReference']}:{notification_item['success']}"
