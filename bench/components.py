"""CPU cost of each step of payhook's receive path, in-process, one ~2.5 KB Stripe event (µs per call).

Run by bench/ingest.py at the end (same environment: its database, Redis db 14 as broker), or alone:
    DJANGO_SECRET_KEY=... FIELD_ENCRYPTION_KEYS=... BLIND_INDEX_KEY=... AUDIT_CHAIN_KEY=... CELERY_BROKER_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/components.py --body-bytes 2500
Prints one JSON object. Only the broker publish touches a server (Redis db 14: the caller flushes it).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def per_call_us(fn, *, seconds: float = 0.5, min_calls: int = 50) -> float:
    """CPU time (process_time: this thread's work plus any other thread's) per call, best of 3."""
    best = float("inf")
    for _ in range(3):
        calls, start = 0, time.process_time()
        deadline = time.perf_counter() + seconds / 3
        while calls < min_calls or time.perf_counter() < deadline:
            fn()
            calls += 1
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return round(best, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--body-bytes", type=int, default=2500)
    parser.add_argument("--seconds", type=float, default=0.5, help="measuring time per step")
    args = parser.parse_args()

    import django

    django.setup()
    from django.utils import timezone

    from bench.ingest import Bodies, requests_sign  # noqa: F401  (same bodies as the load test)
    from config import encryption
    from config.ids import uuid7
    from providers import scheme_get
    from providers.base import SigningKey, hmac_sha256, json_object_parse
    from webhooks import receiving
    from webhooks.tasks import webhook_events_process

    scheme = scheme_get("stripe")
    secret = "whsec_" + "k" * 32
    key = SigningKey(kind="hmac", material=secret.encode())
    provider_id, body = Bodies(args.body_bytes).new(1, "comp")[0]
    timestamp = int(time.time())
    headers = scheme.sign(secret=secret, body=body, timestamp=timestamp, event_id=provider_id)
    payload = json.loads(body)
    used = {"Stripe-Signature": headers["Stripe-Signature"]}
    s = args.seconds

    def publish():
        webhook_events_process.apply_async(args=[[str(uuid7())]], retry=False)

    def publish_20():
        webhook_events_process.apply_async(args=[[str(uuid7()) for _ in range(20)]], retry=False)

    publish()  # connect once
    costs = {
        "hmac_sha256 over t.body": per_call_us(lambda: hmac_sha256(key.material, str(timestamp).encode() + b"." + body), seconds=s),
        "json parse (json.loads)": per_call_us(lambda: json_object_parse(body), seconds=s),
        "scheme.verify (header parse + HMAC + JSON parse)": per_call_us(
            lambda: scheme.verify(headers=headers, body=body, keys=(key,), tolerance=300, now=time.time()), seconds=s
        ),
        "content_hash (sorted canonical JSON + SHA-256)": per_call_us(lambda: scheme.content_hash(payload), seconds=s),
        "Fernet encrypt body": per_call_us(lambda: encryption.encrypt(body), seconds=s),
        "Fernet encrypt used headers": per_call_us(lambda: encryption.encrypt(receiving._headers_serialize(used)), seconds=s),
        "uuid7 + timezone.now": per_call_us(lambda: (uuid7(), timezone.now()), seconds=s),
        "Celery apply_async, 1 id (what the outbox relay pays per message)": per_call_us(publish, seconds=s),
        "Celery apply_async, 20 ids (one full batch)": per_call_us(publish_20, seconds=s),
    }
    print(json.dumps({"body_bytes": len(body), "us_per_call": costs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
