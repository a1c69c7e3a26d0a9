"""How an API key looks and how it is stored: 40 hex characters (160 random bits, the shape DRF's
keys had, so keys issued before hashing keep working), kept as a SHA-256 digest."""

import hashlib
import secrets

PREFIX_LENGTH = 8


def token_key_generate() -> str:
    return secrets.token_hex(20)


def token_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
