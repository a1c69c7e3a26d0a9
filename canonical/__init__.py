"""Canonical events: the provider-neutral facts fulfilment, notifications and audit consume.

`facts` (what a provider's adapter extracts), `envelope` (CloudEvents 1.0 around them, each type's
`data` checked against its frozen JSON Schema under `schemas/`). This package imports no app: the
providers build on it, the consumers read it.
"""
