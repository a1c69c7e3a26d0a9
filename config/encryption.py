"""Encryption at rest for raw payloads, headers and secrets (Fernet, via MultiFernet for rotation)."""

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@functools.cache
def _fernet() -> MultiFernet:
    keys = [key.strip() for key in settings.FIELD_ENCRYPTION_KEYS if key.strip()]
    if not keys:
        raise RuntimeError("FIELD_ENCRYPTION_KEYS is empty")
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: bytes) -> bytes:
    return _fernet().encrypt(plaintext)


def decrypt(token: bytes) -> bytes:
    return _fernet().decrypt(bytes(token))


def rotate(token: bytes) -> bytes:
    """Re-encrypt under the first (newest) key; decrypts with any configured key. An empty value
    stays empty: it holds no token (an event's headers column since they share the body's token,
    webhooks/receiving.py)."""
    if not token:
        return b""
    return _fernet().rotate(bytes(token))


def reset_cache() -> None:
    _fernet.cache_clear()


__all__ = ["InvalidToken", "decrypt", "encrypt", "reset_cache", "rotate"]
