"""The append-only, hash-chained and PII-redacted audit log."""
