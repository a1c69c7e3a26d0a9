"""The append-only, hash-chained and PII-redacted audit log."""

from audit.hashing import blind_index

__all__ = ["blind_index"]
