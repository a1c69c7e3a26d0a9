"""A throwaway PKI and a local https server standing in for PayPal's certificate host.

The CA signs the https server's own certificate (localhost) and the PayPal-like signing leaf
(messageverificationcerts.paypal.com); the leaf's key signs deliveries in the tests, independently
of the scheme's sign(). The server records every request, so a test can assert none was made.
"""

import base64
import binascii
import datetime as dt
import http.server
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from providers.paypal.certificates import certificate_cache

PAYPAL_NAME = "messageverificationcerts.paypal.com"
NOW = dt.datetime.now(dt.UTC)


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ca_create(common_name: str = "payhook test root"):
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def leaf_create(ca_key, ca_cert, dns_name: str, *, not_before=None, not_after=None):
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    return key, builder.sign(ca_key, hashes.SHA256())


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def paypal_signature(private_key, *, transmission_id: str, transmission_time: str, webhook_id: str, body: bytes) -> str:
    """PayPal's signature as its docs define it, written here independently of the scheme's sign():
    base64 RSA PKCS#1 v1.5 SHA-256 over "id|time|webhook id|crc32(body) as unsigned decimal"."""
    crc = binascii.crc32(body) % 2**32
    message = "|".join([transmission_id, transmission_time, webhook_id, str(crc)]).encode()
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


class PKI:
    def __init__(self):
        self.ca_key, self.ca = ca_create()
        self.server_key, self.server_cert = leaf_create(self.ca_key, self.ca, "localhost")
        self.signing_key, self.signing_cert = leaf_create(self.ca_key, self.ca, PAYPAL_NAME)
        self.expired_key, self.expired_cert = leaf_create(
            self.ca_key, self.ca, PAYPAL_NAME, not_before=NOW - dt.timedelta(days=20), not_after=NOW - dt.timedelta(days=1)
        )
        self.wrong_name_key, self.wrong_name_cert = leaf_create(self.ca_key, self.ca, "evil.example.com")
        self.self_signed_key = _key()
        self.self_signed_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(PAYPAL_NAME)).issuer_name(_name(PAYPAL_NAME))
            .public_key(self.self_signed_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(PAYPAL_NAME)]), critical=False)
            .sign(self.self_signed_key, hashes.SHA256())
        )
        rogue_ca_key, rogue_ca = ca_create("rogue root")
        self.rogue_key, self.rogue_cert = leaf_create(rogue_ca_key, rogue_ca, PAYPAL_NAME)


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI()


class CertServer:
    """https://localhost:<port>/<name>.pem serving certificates by name; records each request path."""

    def __init__(self, pki: PKI, tmp_path_factory):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        directory = tmp_path_factory.mktemp("paypal-pki")
        certfile, keyfile = directory / "server.pem", directory / "server.key"
        certfile.write_bytes(pem(pki.server_cert))
        keyfile.write_bytes(pki.server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        self.ca_bundle = directory / "ca.pem"
        self.ca_bundle.write_bytes(pem(pki.ca))
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                if body.startswith(b"REDIRECT "):
                    self.send_response(302)
                    self.send_header("Location", body.removeprefix(b"REDIRECT ").decode())
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-pem-file")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        class QuietServer(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # refused handshakes and clients that stop reading are what some tests do

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.host = f"localhost:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"https://{self.host}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def cert_server_session(pki, tmp_path_factory):
    server = CertServer(pki, tmp_path_factory)
    server.files.update({
        "cert.pem": pem(pki.signing_cert) + pem(pki.ca),  # leaf, then the chain, as PayPal serves it
        "expired.pem": pem(pki.expired_cert),
        "wrong-name.pem": pem(pki.wrong_name_cert),
        "rogue.pem": pem(pki.rogue_cert),
        "self-signed.pem": pem(pki.self_signed_cert),
        "not-a-cert.pem": b"hello",
        "huge.pem": b"-" * (200 * 1024),
        "redirect.pem": b"REDIRECT https://api.paypal.com/cert.pem",
    })
    yield server
    server.close()


@pytest.fixture
def cert_server(cert_server_session, settings):
    """The server, with settings that allow exactly its host and trust exactly the test CA."""
    settings.PAYPAL_CERT_URL_HOSTS = [cert_server_session.host]
    settings.PAYPAL_CERT_CA_BUNDLE = str(cert_server_session.ca_bundle)
    settings.PAYPAL_CERT_SUBJECT_NAMES = ["messageverificationcerts.sandbox.paypal.com", PAYPAL_NAME]
    settings.PAYPAL_CERT_FETCH_TIMEOUT_SECONDS = 2.0
    cert_server_session.requests.clear()
    certificate_cache.clear()
    yield cert_server_session
    certificate_cache.clear()
