"""PayPal: RSA (PKCS#1 v1.5, SHA-256) over `"{transmission id}|{transmission time}|{webhook id}|{crc32}"`.

Headers: PAYPAL-TRANSMISSION-ID, PAYPAL-TRANSMISSION-TIME (RFC 3339), PAYPAL-TRANSMISSION-SIG
(base64), PAYPAL-CERT-URL, PAYPAL-AUTH-ALGO (only `SHA256withRSA`). The crc32 is of the raw body,
as an unsigned decimal. The endpoint's "secret" is its PayPal webhook id, which is not secret: what
authenticates is PayPal's private key, checked through the certificate at PAYPAL-CERT-URL
(providers/paypal/certificates.py decides which URLs may be fetched and which certificates trusted).
"""

import base64
import binascii
import json
import re
import uuid
import zlib
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature as RSAInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from django.core.management.base import CommandError
from django.views.decorators.debug import sensitive_variables

from providers.base import (
    Scheme,
    SigningKey,
    VerifiedDelivery,
    event_type_get,
    json_object_parse,
    provider_event_id_get,
    timestamp_check,
)
from providers.exceptions import (
    InvalidSecret,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
)
from providers.paypal.certificates import certificate_cache
from providers.paypal.facts import paypal_event_mode, paypal_facts, rfc3339_parse
from providers.paypal.samples import paypal_sample_event

ID_HEADER = "PAYPAL-TRANSMISSION-ID"
TIME_HEADER = "PAYPAL-TRANSMISSION-TIME"
SIG_HEADER = "PAYPAL-TRANSMISSION-SIG"
CERT_URL_HEADER = "PAYPAL-CERT-URL"
ALGO_HEADER = "PAYPAL-AUTH-ALGO"
HEADERS = (ID_HEADER, TIME_HEADER, SIG_HEADER, CERT_URL_HEADER, ALGO_HEADER)
AUTH_ALGO = "SHA256withRSA"
# PayPal's transmission ids are UUIDs; the bound keeps `|` (the field separator) and junk out.
_TRANSMISSION_ID = re.compile(r"[A-Za-z0-9-]{1,128}")
_WEBHOOK_ID = re.compile(r"[A-Za-z0-9]{1,64}")
MAX_SIGNATURE_BASE64 = 1400  # an RSA-8192 signature is 1366 base64 characters
MAX_TIME_LENGTH = 40


class PayPalSigningUnavailable(CommandError, NotImplementedError):
    """PayPal signs with its own private key; an operator has none. A CommandError, so
    send_test_webhook prints the message instead of a traceback."""


def _header(headers, name: str) -> str | None:
    # request.headers is case-insensitive; a plain dict (tests, benchmarks) may use either spelling.
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _signature_decode(value: str) -> bytes:
    if len(value) > MAX_SIGNATURE_BASE64:
        raise MalformedSignature("PAYPAL-TRANSMISSION-SIG is too long")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedSignature("PAYPAL-TRANSMISSION-SIG is not base64") from None


def body_crc32(body: bytes) -> int:
    return zlib.crc32(body) & 0xFFFFFFFF


def signed_message(*, transmission_id: str, transmission_time: str, webhook_id: str, crc: int) -> bytes:
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()


class PayPalScheme(Scheme):
    name = "paypal"

    def secret_parse(self, secret: str) -> SigningKey:
        secret = secret.strip()
        if not _WEBHOOK_ID.fullmatch(secret):
            raise InvalidSecret("a PayPal endpoint's secret is its webhook id: letters and digits, up to 64")
        # Kind "hmac": EndpointSecret.Kind has no PayPal choice, and adding one is a migration of
        # webhooks. The material is the webhook id, which goes into the signed string, not a MAC key.
        return SigningKey(kind="webhook_id", material=secret.encode())

    @sensitive_variables("body", "keys", "payload")
    def verify(self, *, headers, body, keys, tolerance, now):
        values = {name: _header(headers, name) for name in HEADERS}
        if not all(values.values()):
            raise MissingSignature("the PAYPAL-TRANSMISSION-* / PAYPAL-CERT-URL / PAYPAL-AUTH-ALGO headers are required")
        if values[ALGO_HEADER] != AUTH_ALGO:
            raise MalformedSignature(f"PAYPAL-AUTH-ALGO must be {AUTH_ALGO}")
        transmission_id = values[ID_HEADER]
        if not _TRANSMISSION_ID.fullmatch(transmission_id):
            raise MalformedSignature("PAYPAL-TRANSMISSION-ID is not a transmission id")
        transmission_time = values[TIME_HEADER]
        sent_at = rfc3339_parse(transmission_time) if len(transmission_time) <= MAX_TIME_LENGTH else None
        if sent_at is None:
            raise MalformedSignature("PAYPAL-TRANSMISSION-TIME is not an RFC 3339 time")
        signature = _signature_decode(values[SIG_HEADER])
        webhook_ids = [key.material.decode() for key in keys if key.kind == "webhook_id"]
        if not webhook_ids:
            raise InvalidSignature("the endpoint has no PayPal webhook id")
        # Before the certificate is fetched: a stale or far-future time (signed or not) must not make
        # us open a connection to PayPal. Unlike the HMAC schemes, this answers a forged request with a
        # stale time timestamp_out_of_tolerance rather than invalid_signature; it reveals nothing.
        timestamp_check(int(sent_at.timestamp()), tolerance=tolerance, now=now)
        # Raises (400 invalid_signature) for a URL off the allow-list before any network access.
        public_key = certificate_cache.public_key(values[CERT_URL_HEADER], now=now)
        crc = body_crc32(body)  # once per request, whatever the number of webhook ids
        if not any(self._rsa_verifies(public_key, signature, transmission_id, transmission_time, webhook_id, crc)
                   for webhook_id in webhook_ids):
            raise InvalidSignature("the signature does not verify for any of the endpoint's webhook ids")
        payload = json_object_parse(body)
        return VerifiedDelivery(
            provider_event_id=provider_event_id_get(payload, "id"),
            event_type=event_type_get(payload, "event_type"),
            payload=payload,
            provider_created_at=rfc3339_parse(payload.get("create_time")),
            used_headers={name: values[name] for name in HEADERS},
        )

    @staticmethod
    def _rsa_verifies(public_key, signature, transmission_id, transmission_time, webhook_id, crc) -> bool:
        message = signed_message(
            transmission_id=transmission_id, transmission_time=transmission_time, webhook_id=webhook_id, crc=crc
        )
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (RSAInvalidSignature, ValueError):
            return False
        return True

    def facts(self, payload, *, provider_event_id=""):
        return paypal_facts(payload)

    def mode_mismatch(self, payload, *, mode):
        # PayPal's event carries no livemode flag; its HATEOAS links name the API it came from
        # (api.paypal.com or api.sandbox.paypal.com). An event whose links say neither is not judged.
        sent_from = paypal_event_mode(payload)
        return sent_from is not None and sent_from != mode

    def sample(self, event_type, *, mode):
        event = paypal_sample_event(event_type, sandbox=mode != "live")
        return json.dumps(event).encode(), event["id"]

    @sensitive_variables("secret", "body", "private_key", "pem")
    def sign(self, *, secret, body, timestamp, event_id):
        """Headers as PayPal would send them, for tests and local runs only: PayPal signs with its own
        private key. Needs PAYPAL_TEST_SIGNING_KEY (a PEM RSA private key file) and
        PAYPAL_TEST_CERT_URL (where its certificate is served, on an allow-listed host)."""
        from django.conf import settings

        key_file, cert_url = settings.PAYPAL_TEST_SIGNING_KEY, settings.PAYPAL_TEST_CERT_URL
        if not key_file or not cert_url:
            raise PayPalSigningUnavailable(
                "PayPal signs with its own key; use PayPal's webhook simulator "
                "(or set PAYPAL_TEST_SIGNING_KEY and PAYPAL_TEST_CERT_URL to a test key and its certificate)"
            )
        with open(key_file, "rb") as handle:
            pem = handle.read()
        private_key = serialization.load_pem_private_key(pem, password=None)
        transmission_id = str(uuid.uuid4())  # PayPal sends a fresh UUID per transmission
        transmission_time = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = signed_message(
            transmission_id=transmission_id, transmission_time=transmission_time, webhook_id=secret.strip(), crc=body_crc32(body)
        )
        signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return {
            ID_HEADER: transmission_id,
            TIME_HEADER: transmission_time,
            SIG_HEADER: base64.b64encode(signature).decode(),
            CERT_URL_HEADER: cert_url,
            ALGO_HEADER: AUTH_ALGO,
        }


scheme = PayPalScheme()
