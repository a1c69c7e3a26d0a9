from prometheus_client import Counter

events_received = Counter(
    "payhook_webhook_events_total", "Verified deliveries by outcome.", ["endpoint", "outcome"]
)
signature_failures = Counter(
    "payhook_webhook_refused_total", "Deliveries refused before storage, by reason.", ["endpoint", "reason"]
)
# Every refusal before storage, not only signatures: also `rate_limited` and `forbidden_source`.
refused = signature_failures
