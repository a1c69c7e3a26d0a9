"""PayPal's signing certificate: the only network access a delivery may cause, and where SSRF is stopped.

A delivery names the certificate to verify it with (`PAYPAL-CERT-URL`); anyone can send one. So the
URL is checked against an allow-list of hosts before any connection (https only, exact host, no
userinfo, no IP literal, the default port unless the allow-list names another, a plain path); the fetch follows
no redirect, uses no proxy, has a short timeout and a size cap; and what comes back is trusted only
if it chains to the configured CA bundle, is valid now and names PayPal's message-verification host (live or sandbox).
Verified certificates are cached by URL (bounded, with expiry), so a burst costs one fetch.
"""

import functools
import http.client
import ipaddress
import logging
import re
import ssl
import threading
import time
import warnings
from collections import OrderedDict
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from providers.exceptions import InvalidSignature, ProviderUnavailable

logger = logging.getLogger(__name__)

MAX_CERT_URL_LENGTH = 2048
MAX_CERT_BYTES = 64 * 1024  # a leaf and its intermediates are a few KiB
MAX_CHAIN_CERTS = 8
CACHE_ENTRIES = 32  # PayPal rotates one certificate at a time; a handful of URLs at most are live
_NETLOC = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")
# PayPal's certificate paths are like /v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270.
_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,512}")
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)


class CertificateRefused(InvalidSignature):
    """The certificate URL is not allowed, could not be fetched, or the certificate is not trusted."""


def _settings():
    from django.conf import settings

    return settings


def cert_url_allowed(url: str, allowed_hosts) -> tuple[str, int, str]:
    """(host, port, path) of an allowed certificate URL; CertificateRefused otherwise. No network."""
    if not isinstance(url, str) or len(url) > MAX_CERT_URL_LENGTH or not url.isascii() or not url.isprintable():
        raise CertificateRefused("the certificate URL is not allowed")
    parts = urlsplit(url)
    # The netloc is matched whole: no userinfo (`api.paypal.com@evil.test`), no brackets, no spaces.
    if parts.scheme != "https" or not _NETLOC.fullmatch(parts.netloc) or not _PATH.fullmatch(parts.path):
        raise CertificateRefused("the certificate URL is not an allowed https URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise CertificateRefused("the certificate URL has a query or fragment")
    host = (parts.hostname or "").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise CertificateRefused("the certificate URL names an IP address")
    try:
        port = parts.port
    except ValueError:
        raise CertificateRefused("the certificate URL has an invalid port") from None
    allowed = {entry.strip().lower() for entry in allowed_hosts if entry.strip()}
    # A bare host allows only the default port; another port must be listed as host:port.
    if (host if port is None else f"{host}:{port}") not in allowed:
        raise CertificateRefused("the certificate URL's host is not on PAYPAL_CERT_URL_HOSTS")
    return host, port or 443, parts.path


@functools.lru_cache(maxsize=4)
def _trust(ca_bundle: str) -> tuple[ssl.SSLContext, Store]:
    """The TLS context for the fetch and the store the certificate must chain to, from one bundle
    (empty: the system's trust store)."""
    cafile = ca_bundle or ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with open(cafile, "rb") as handle:
        pem = handle.read()
    roots = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a system store holds old roots cryptography warns about
        for block in _PEM_BLOCK.findall(pem):
            try:
                roots.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue  # one root our parser refuses must not drop the rest of the store
    if not roots:
        raise ValueError("the CA bundle holds no certificate")
    return context, Store(roots)


def _fetch(host: str, port: int, path: str, *, context: ssl.SSLContext, timeout: float) -> bytes:
    # http.client, not urllib: it follows no redirect and reads no proxy from the environment.
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.request("GET", path, headers={"Accept": "application/x-pem-file, */*", "User-Agent": "payhook"})
        response = connection.getresponse()
        if response.status != 200:
            raise CertificateRefused(f"the certificate URL answered {response.status}")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_CERT_BYTES:
            raise CertificateRefused("the certificate is larger than allowed")
        data = response.read(MAX_CERT_BYTES + 1)
        if len(data) > MAX_CERT_BYTES:
            raise CertificateRefused("the certificate is larger than allowed")
        return data
    finally:
        connection.close()


def _chain_verify(pem: bytes, *, store: Store, subject_names: tuple[str, ...], at: datetime) -> x509.Certificate:
    try:
        chain = [x509.load_pem_x509_certificate(block) for block in _PEM_BLOCK.findall(pem)[:MAX_CHAIN_CERTS + 1]]
    except ValueError:
        raise CertificateRefused("the certificate URL did not serve a PEM certificate") from None
    if not chain or len(chain) > MAX_CHAIN_CERTS:
        raise CertificateRefused("the certificate URL did not serve a usable certificate chain")
    leaf, intermediates = chain[0], chain[1:]
    policy = PolicyBuilder().store(store).time(at).max_chain_depth(MAX_CHAIN_CERTS)
    reason = "no certificate name is configured"
    for subject_name in subject_names:  # PayPal's live and sandbox names: one of them must match
        try:
            policy.build_server_verifier(x509.DNSName(subject_name)).verify(leaf, intermediates)
        except (VerificationError, ValueError) as exc:
            reason = str(exc)
            continue
        break
    else:
        raise CertificateRefused(f"the certificate is not trusted: {reason}")
    if not isinstance(leaf.public_key(), RSAPublicKey):
        raise CertificateRefused("the certificate's key is not RSA")
    return leaf


class CertificateCache:
    """Verified public keys by certificate URL (and the trust settings they were verified under):
    bounded LRU, each entry kept until the earlier of PAYPAL_CERT_CACHE_SECONDS and the
    certificate's expiry. One fetch at a time, so a burst of deliveries fetches once."""

    def __init__(self, size: int = CACHE_ENTRIES):
        self._size = size
        self._entries: OrderedDict[tuple, tuple[RSAPublicKey, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _get(self, key: tuple, now: float) -> RSAPublicKey | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def _put(self, key: tuple, public_key: RSAPublicKey, expires: float) -> None:
        with self._lock:
            self._entries[key] = (public_key, expires)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def public_key(self, url: str, *, now: float) -> RSAPublicKey:
        """The RSA public key of the trusted certificate at `url`; CertificateRefused otherwise."""
        settings = _settings()
        host, port, path = cert_url_allowed(url, settings.PAYPAL_CERT_URL_HOSTS)
        ca_bundle = settings.PAYPAL_CERT_CA_BUNDLE
        subject_names = tuple(name.strip().lower() for name in settings.PAYPAL_CERT_SUBJECT_NAMES if name.strip())
        key = (url, ca_bundle, subject_names)
        cached = self._get(key, now)
        if cached is not None:
            return cached
        with self._fetch_lock:
            cached = self._get(key, now)  # fetched by another thread while this one waited
            if cached is not None:
                return cached
            try:
                context, store = _trust(ca_bundle)
            except (OSError, ValueError, ssl.SSLError):
                logger.error("PAYPAL_CERT_CA_BUNDLE could not be loaded: no PayPal delivery can verify")
                raise CertificateRefused("the CA bundle could not be loaded") from None
            started = time.monotonic()
            try:
                pem = _fetch(host, port, path, context=context, timeout=settings.PAYPAL_CERT_FETCH_TIMEOUT_SECONDS)
            except (OSError, http.client.HTTPException) as exc:
                logger.warning("PayPal certificate fetch from %s failed: %s", host, type(exc).__name__)
                if isinstance(exc, ssl.SSLCertVerificationError):  # the host itself is not who it says
                    raise CertificateRefused("the certificate host's TLS certificate is not trusted") from None
                raise ProviderUnavailable("PayPal's certificate could not be fetched") from None
            leaf = _chain_verify(pem, store=store, subject_names=subject_names, at=datetime.fromtimestamp(now, UTC))
            logger.info("PayPal certificate fetched from %s in %.3f s", host, time.monotonic() - started)
            expires = min(now + settings.PAYPAL_CERT_CACHE_SECONDS, leaf.not_valid_after_utc.timestamp())
            public_key = leaf.public_key()
            self._put(key, public_key, expires)
            return public_key


certificate_cache = CertificateCache()
