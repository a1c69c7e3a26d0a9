"""Placeholder: the audit helper replaces this with the hash-chained, redacted implementation."""


def audit_entry_append(*, action, actor="system", event_id=None, data=None, subjects=None, dedup_key=None):
    return None
