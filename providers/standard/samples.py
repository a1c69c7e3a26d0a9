"""Sample Standard Webhooks messages for `send_test_webhook`, the tests and the benchmarks."""

import time


def standard_event(event_type: str, data: dict | None = None) -> dict:
    return {"type": event_type, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data or {}}
