"""The PayPal scheme's verify(): deliveries signed with a throwaway CA's leaf key (not our sign()),
its certificate served over https by a local server on an allow-listed host."""

import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from providers import scheme_get
from providers.exceptions import (
    InvalidPayload,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    ProviderUnavailable,
    TimestampOutOfTolerance,
)
from providers.paypal import samples
from providers.paypal.certificates import certificate_cache
from tests.providers.paypal.conftest import paypal_signature

WEBHOOK_ID = "8PT597110X687430LKGECATA"
OTHER_WEBHOOK_ID = "1JE4291016473214C"
TOLERANCE = 300

scheme = scheme_get("paypal")


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(event_type: str = "CHECKOUT.ORDER.COMPLETED") -> bytes:
    return json.dumps(samples.paypal_sample_event(event_type)).encode()


def _headers(private_key, body: bytes, *, cert_url: str, webhook_id: str = WEBHOOK_ID, sent: float | None = None, **overrides):
    transmission_id, transmission_time = str(uuid.uuid4()), _rfc3339(time.time() if sent is None else sent)
    headers = {
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-TIME": transmission_time,
        "PAYPAL-TRANSMISSION-SIG": paypal_signature(
            private_key, transmission_id=transmission_id, transmission_time=transmission_time, webhook_id=webhook_id, body=body
        ),
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
    }
    headers.update(overrides)
    return headers


def _verify(headers, body, *, webhook_ids=(WEBHOOK_ID,), now: float | None = None):
    keys = [scheme.secret_parse(webhook_id) for webhook_id in webhook_ids]
    return scheme.verify(headers=headers, body=body, keys=keys, tolerance=TOLERANCE, now=time.time() if now is None else now)


def test_a_delivery_signed_by_the_certificates_key_verifies(pki, cert_server):
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"))

    delivery = _verify(headers, body)

    event = json.loads(body)
    assert delivery.provider_event_id == event["id"] and event["id"].startswith("WH-")
    assert delivery.event_type == "CHECKOUT.ORDER.COMPLETED"
    assert delivery.payload == event
    assert delivery.provider_created_at is not None and abs(delivery.provider_created_at.timestamp() - time.time()) < 60
    assert delivery.used_headers == headers
    assert cert_server.requests == ["/cert.pem"]


def test_a_second_delivery_uses_the_cached_certificate(pki, cert_server):
    for _ in range(3):
        body = _body()
        _verify(_headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem")), body)

    assert cert_server.requests == ["/cert.pem"]


def test_the_cache_expires(pki, cert_server, settings):
    settings.PAYPAL_CERT_CACHE_SECONDS = 10
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"))
    _verify(headers, body)
    _verify(headers, body, now=time.time() + 5)
    assert len(cert_server.requests) == 1
    _verify(headers, body, now=time.time() + 11)
    assert len(cert_server.requests) == 2


def test_headers_are_read_case_insensitively_as_django_passes_them(pki, cert_server):
    body = _body()
    headers = {name.lower(): value for name, value in _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem")).items()}

    assert _verify(headers, body).event_type == "CHECKOUT.ORDER.COMPLETED"


def test_a_signature_over_another_webhook_id_is_invalid(pki, cert_server):
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"), webhook_id=OTHER_WEBHOOK_ID)

    with pytest.raises(InvalidSignature):
        _verify(headers, body)


def test_rotation_either_webhook_id_verifies(pki, cert_server):
    body = _body()
    for signed_with in (WEBHOOK_ID, OTHER_WEBHOOK_ID):
        headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"), webhook_id=signed_with)
        assert _verify(headers, body, webhook_ids=(OTHER_WEBHOOK_ID, WEBHOOK_ID)).provider_event_id


def test_a_tampered_body_is_invalid(pki, cert_server):
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"))

    with pytest.raises(InvalidSignature):
        _verify(headers, body.replace(b"100.00", b"999.00"))


def test_a_signature_by_another_key_is_invalid(pki, cert_server):
    body = _body()
    headers = _headers(pki.wrong_name_key, body, cert_url=cert_server.url("cert.pem"))

    with pytest.raises(InvalidSignature):
        _verify(headers, body)


@pytest.mark.parametrize("offset", [-TOLERANCE - 5, TOLERANCE + 5])
def test_a_transmission_time_outside_the_tolerance_is_refused(pki, cert_server, offset):
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"), sent=time.time() + offset)

    with pytest.raises(TimestampOutOfTolerance):
        _verify(headers, body)


def test_a_transmission_time_with_an_offset_and_fraction_is_read(pki, cert_server):
    body = _body()
    sent = datetime.fromtimestamp(time.time()).astimezone().isoformat(timespec="microseconds")
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"))
    headers["PAYPAL-TRANSMISSION-TIME"] = sent
    headers["PAYPAL-TRANSMISSION-SIG"] = paypal_signature(
        pki.signing_key, transmission_id=headers["PAYPAL-TRANSMISSION-ID"], transmission_time=sent, webhook_id=WEBHOOK_ID, body=body
    )

    assert _verify(headers, body).provider_event_id


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/cert.pem",
        "https://[::1]:{port}/cert.pem",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/cert.pem",  # the allowed host, but on another port than the listed one
        "http://localhost:{port}/cert.pem",
        "https://api.paypal.com.evil.test/cert.pem",
        "https://api.paypal.com@evil.test/cert.pem",
        "https://localhost:{port}@evil.test/cert.pem",
        "https://user@localhost:{port}/cert.pem",
        "https://LOCALHOST.:{port}/cert.pem",
        "https://api.paypal.com/cert.pem",  # allowed by default, not by this test's allow-list
        "file:///etc/passwd",
        "https://localhost:{port}\\@evil.test/",
        "https://localhost:{port}/cert.pem\r\nX: y",
        "//localhost:{port}/cert.pem",
        "https://localhost:{port}/cert.pem?x=1",
        "https://localhost:{port}/cert.pem#x",
        "https://localhost:{port}",
        "https://localhost:{port}/cert.pem,https://localhost:{port}/cert.pem",
        "https://localhost:{port}/%2e%2e/cert.pem",
    ],
)
def test_a_certificate_url_off_the_allow_list_is_refused_without_any_request(pki, cert_server, url, monkeypatch):
    import http.client

    def no_network(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(http.client.HTTPSConnection, "connect", no_network)
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=url.format(port=cert_server.port))

    with pytest.raises(InvalidSignature):
        _verify(headers, body)
    assert cert_server.requests == []


def test_default_hosts_are_paypals_only(settings):
    from providers.paypal.certificates import cert_url_allowed

    hosts = ["api.paypal.com", "api.sandbox.paypal.com"]
    assert cert_url_allowed("https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270", hosts)[0] == "api.paypal.com"
    with pytest.raises(InvalidSignature):
        cert_url_allowed("https://api.paypal.com:8443/cert", hosts)
    with pytest.raises(InvalidSignature):
        cert_url_allowed("https://api-m.paypal.com/cert", hosts)


@pytest.mark.parametrize(
    "name", ["self-signed.pem", "rogue.pem", "expired.pem", "wrong-name.pem", "not-a-cert.pem", "huge.pem", "redirect.pem", "missing.pem"]
)
def test_an_untrusted_or_unusable_certificate_is_refused(pki, cert_server, name):
    key = {"self-signed.pem": pki.self_signed_key, "rogue.pem": pki.rogue_key, "expired.pem": pki.expired_key, "wrong-name.pem": pki.wrong_name_key}.get(name, pki.signing_key)
    body = _body()
    headers = _headers(key, body, cert_url=cert_server.url(name))

    with pytest.raises(InvalidSignature):
        _verify(headers, body)
    assert cert_server.requests == [f"/{name}"]  # fetched once, the redirect not followed


def test_a_refused_certificate_is_not_cached_as_trusted(pki, cert_server):
    body = _body()
    headers = _headers(pki.rogue_key, body, cert_url=cert_server.url("rogue.pem"))
    for _ in range(2):
        with pytest.raises(InvalidSignature):
            _verify(headers, body)
    assert certificate_cache._entries == {}


def test_the_system_trust_store_does_not_trust_the_test_ca(pki, cert_server, settings):
    settings.PAYPAL_CERT_CA_BUNDLE = ""  # the system store: the test CA is in none
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"))

    with pytest.raises(InvalidSignature):
        _verify(headers, body)


def test_missing_headers_are_missing_signature():
    with pytest.raises(MissingSignature):
        _verify({}, b"{}")
    headers = _headers_static()
    del headers["PAYPAL-CERT-URL"]
    with pytest.raises(MissingSignature):
        _verify(headers, b"{}")


def _headers_static(**overrides):
    headers = {
        "PAYPAL-TRANSMISSION-ID": str(uuid.uuid4()),
        "PAYPAL-TRANSMISSION-TIME": _rfc3339(time.time()),
        "PAYPAL-TRANSMISSION-SIG": "AAAA",
        "PAYPAL-CERT-URL": "https://api.paypal.com/v1/notifications/certs/CERT-1",
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
    }
    headers.update(overrides)
    return headers


@pytest.mark.parametrize(
    "overrides",
    [
        {"PAYPAL-AUTH-ALGO": "SHA1withRSA"},
        {"PAYPAL-AUTH-ALGO": "sha256withrsa"},
        {"PAYPAL-AUTH-ALGO": "none"},
        {"PAYPAL-TRANSMISSION-ID": "a|b"},
        {"PAYPAL-TRANSMISSION-ID": "x" * 10_000},
        {"PAYPAL-TRANSMISSION-TIME": "1767225600"},
        {"PAYPAL-TRANSMISSION-TIME": "2026-13-01T00:00:00Z"},
        {"PAYPAL-TRANSMISSION-TIME": "9" * 5000},
        {"PAYPAL-TRANSMISSION-TIME": "2026-01-01T00:00:00"},
        {"PAYPAL-TRANSMISSION-SIG": "not base64!"},
        {"PAYPAL-TRANSMISSION-SIG": "A" * 100_000},
        {"PAYPAL-TRANSMISSION-SIG": ",".join(["AAAA"] * 500)},
        # a repeated header, as a WSGI server joins it
        {"PAYPAL-AUTH-ALGO": "SHA256withRSA,SHA256withRSA"},
        {"PAYPAL-TRANSMISSION-ID": "0d3c9b5e-1,0d3c9b5e-2"},
        {"PAYPAL-TRANSMISSION-TIME": "2026-01-01T00:00:00Z,2026-01-01T00:00:00Z"},
    ],
)
def test_hostile_header_shapes_are_malformed_before_any_network_or_crypto(overrides, monkeypatch):
    def no_fetch(*args, **kwargs):
        raise AssertionError("the certificate was looked up")

    monkeypatch.setattr(certificate_cache, "public_key", no_fetch)
    started = time.perf_counter()
    with pytest.raises(MalformedSignature):
        _verify(_headers_static(**overrides), b"{}")
    assert time.perf_counter() - started < 0.05


def test_a_verified_body_without_an_event_id_is_invalid_payload(pki, cert_server):
    body = json.dumps({"event_type": "CHECKOUT.ORDER.COMPLETED"}).encode()
    with pytest.raises(InvalidPayload):
        _verify(_headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem")), body)


def test_a_verified_body_that_is_not_strict_json_is_invalid_payload(pki, cert_server):
    body = b'{"id": "WH-1", "id": "WH-2"}'
    with pytest.raises(InvalidPayload):
        _verify(_headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem")), body)


def test_our_signer_agrees_with_the_independent_one(pki, cert_server, settings, tmp_path):
    key_file = tmp_path / "key.pem"
    from cryptography.hazmat.primitives import serialization

    key_file.write_bytes(pki.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    settings.PAYPAL_TEST_SIGNING_KEY, settings.PAYPAL_TEST_CERT_URL = str(key_file), cert_server.url("cert.pem")
    body = _body()

    headers = scheme.sign(secret=WEBHOOK_ID, body=body, timestamp=int(time.time()), event_id="WH-1")

    independent = paypal_signature(
        pki.signing_key, transmission_id=headers["PAYPAL-TRANSMISSION-ID"],
        transmission_time=headers["PAYPAL-TRANSMISSION-TIME"], webhook_id=WEBHOOK_ID, body=body,
    )
    assert headers["PAYPAL-TRANSMISSION-SIG"] == independent  # PKCS#1 v1.5 is deterministic
    assert _verify(headers, body).provider_event_id


def test_sign_without_a_test_key_says_to_use_paypals_simulator(settings):
    from django.core.management.base import CommandError

    settings.PAYPAL_TEST_SIGNING_KEY = ""
    with pytest.raises(CommandError, match="PayPal signs with its own key; use PayPal's webhook simulator"):
        scheme.sign(secret=WEBHOOK_ID, body=b"{}", timestamp=0, event_id="WH-1")
    with pytest.raises(NotImplementedError):
        scheme.sign(secret=WEBHOOK_ID, body=b"{}", timestamp=0, event_id="WH-1")


@pytest.mark.parametrize("secret", ["", "   ", "whsec_abc", "a" * 65, "WH-ID", "8PT597110X687430LKGECATA\x00"])
def test_secret_parse_accepts_only_a_webhook_id(secret):
    from providers.exceptions import InvalidSecret

    with pytest.raises(InvalidSecret):
        scheme.secret_parse(secret)


def test_secret_parse_keeps_the_webhook_id():
    key = scheme.secret_parse(WEBHOOK_ID)
    assert key.material == WEBHOOK_ID.encode() and WEBHOOK_ID not in repr(key)


def test_the_signed_string_uses_the_bodys_crc32_as_an_unsigned_decimal():
    from providers.paypal.provider import body_crc32, signed_message

    body = b"The quick brown fox jumps over the lazy dog"  # CRC-32 0x414FA339, the standard check value
    assert body_crc32(body) == 1095738169
    assert body_crc32(b"\x00" * 7) > 2**31  # the high bit set: no negative number
    assert signed_message(transmission_id="t-1", transmission_time="2026-01-01T00:00:00Z", webhook_id="W1", crc=1095738169) == (
        b"t-1|2026-01-01T00:00:00Z|W1|1095738169"
    )


def test_an_unreachable_certificate_host_is_unavailable_not_a_bad_signature(pki, cert_server, settings):
    from tests.support.processes import free_port

    closed = f"localhost:{free_port()}"  # allow-listed, but nothing listens there
    settings.PAYPAL_CERT_URL_HOSTS = [*settings.PAYPAL_CERT_URL_HOSTS, closed]
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=f"https://{closed}/cert.pem")

    with pytest.raises(ProviderUnavailable):
        _verify(headers, body)
    # Not remembered: the next delivery tries again, and verifies once the host answers.
    good = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"))
    assert _verify(good, body).provider_event_id == json.loads(body)["id"]


@pytest.mark.parametrize("sent", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_transmission_time_without_a_utc_value_is_malformed_not_a_server_error(pki, cert_server, sent):
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"), **{"PAYPAL-TRANSMISSION-TIME": sent})

    with pytest.raises(MalformedSignature):
        _verify(headers, body)
    assert cert_server.requests == []


def test_a_stale_transmission_time_is_refused_before_any_certificate_fetch(pki, cert_server):
    body = _body()
    headers = _headers(pki.signing_key, body, cert_url=cert_server.url("cert.pem"), sent=time.time() - 3600)

    with pytest.raises(TimestampOutOfTolerance):
        _verify(headers, body)
    assert cert_server.requests == []
