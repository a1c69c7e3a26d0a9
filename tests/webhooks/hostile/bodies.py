"""Hostile request material shared by the in-process tests, the gunicorn suite and the properties."""

import json
import secrets

# Each signed body is well signed; the receiver must refuse it as invalid_payload and store nothing.
HOSTILE_BODIES = {
    "nan": b'{"id": "evt_nan", "type": "x", "amount": NaN}',
    "infinity": b'{"id": "evt_inf", "type": "x", "amount": Infinity}',
    "minus-infinity": b'{"id": "evt_minf", "type": "x", "amount": -Infinity}',
    "overflowing-float": b'{"id": "evt_big", "type": "x", "amount": 1e999}',
    "duplicate-key": b'{"id": "evt_dup", "type": "x", "type": "y"}',
    "duplicate-id": b'{"id": "evt_dup_a", "id": "evt_dup_b", "type": "x"}',
    "nested-duplicate-key": b'{"id": "evt_ndup", "data": {"a": 1, "a": 2}}',
    "deep-array": b'{"id": "evt_deep", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "deep-object": b'{"id": "evt_deepo", "data": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
    "deep-100k": b'{"id": "evt_deep100k", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "lone-high-surrogate": b'{"id": "evt_sur", "type": "\\ud800"}',
    "lone-low-surrogate": b'{"id": "evt_sur2", "type": "x", "k": "\\udfff"}',
    "surrogate-in-key": b'{"id": "evt_sur3", "\\ud800": 1}',
    "invalid-utf8": b'{"id": "evt_utf", "type": "\xff\xfe"}',
    "overlong-utf8": b'{"id": "evt_overlong", "type": "\xc0\xaf"}',
    "encoded-surrogate-utf8": b'{"id": "evt_cesu", "type": "\xed\xa0\x80"}',
    "utf16": '{"id": "evt_u16", "type": "x"}'.encode("utf-16"),
    "bom": b'\xef\xbb\xbf{"id": "evt_bom", "type": "x"}',
    "huge-integer": b'{"id": "evt_int", "amount": ' + b"9" * 5000 + b"}",
    "array": b'[{"id": "evt_arr"}]',
    "string": b'"evt_str"',
    "number": b"42",
    "null": b"null",
    "empty": b"",
    "truncated": b'{"id": "evt_trunc", "type": ',
    "trailing-garbage": b'{"id": "evt_trail"} x',
    "single-quotes": b"{'id': 'evt_sq'}",
    "missing-id": b'{"type": "invoice.paid"}',
    "id-not-a-string": b'{"id": 12345, "type": "invoice.paid"}',
    "id-empty": b'{"id": "", "type": "invoice.paid"}',
    "id-nul": b'{"id": "evt_\\u0000nul", "type": "invoice.paid"}',
    "id-too-long": json.dumps({"id": "evt_" + "x" * 300, "type": "invoice.paid"}).encode(),
}
# Bodies Standard Webhooks refuses: its event id is the webhook-id header, so a payload without an
# `id` or with an odd one is still a valid delivery there.
STANDARD_ACCEPTS = {"missing-id", "id-not-a-string", "id-empty", "id-nul", "id-too-long"}


def valid_event(event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "type": "customer.created",
        "created": 1767225600,
        "livemode": True,
        "data": {"object": {"id": "cus_x", "object": "customer", "email": "a@example.com", "note": "é 😀 [{\"]}"}},
    }
