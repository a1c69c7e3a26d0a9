#!/usr/bin/env python3
"""Replay N already-processed events through `replay_events` and real workers; count new effects.

Issue 5 asks that replaying 10,000 already-processed events produces zero new effects. This script
stores N paid-checkout events, lets 2 Procfile worker processes fulfil them, counts every effect
(entitlements, notifications, e-mails sent, audit entries), runs `manage.py replay_events` over the
whole range, lets the workers process every event again, and counts again.

    .venv/bin/python bench/replay.py [-n 10000] [--workers 2]

Uses its own database payhook_replaybench (dropped and recreated) and Redis db 4 (flushed).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.processes import process_env, worker_start  # noqa: E402

DB = "payhook_replaybench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each drain")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", f"DROP DATABASE IF EXISTS {DB}",
                    "-c", f"CREATE DATABASE {DB}"], check=True)
    env = process_env(
        f"postgres://postgres@127.0.0.1:5432/{DB}",
        "redis://127.0.0.1:6379/4",
        DJANGO_SECRET_KEY="bench-" + os.urandom(16).hex(),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        BLIND_INDEX_KEY=os.urandom(16).hex(),
        AUDIT_CHAIN_KEY=os.urandom(16).hex(),
        DJANGO_DEBUG="false",
        DJANGO_LOG_LEVEL="WARNING",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    import redis
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db.models import Count

    from audit.models import AuditEntry
    from fulfillment.models import Entitlement
    from fulfillment.services import catalog_import
    from notifications.models import Notification
    from tests.conftest import signed_headers
    from tests.fulfillment import stripe_events as se
    from webhooks.endpoints import webhook_endpoint_create
    from webhooks.models import WebhookEvent
    from webhooks.receiving import webhook_event_receive

    redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()
    call_command("migrate", verbosity=0)
    secret = "whsec_" + os.urandom(16).hex()
    webhook_endpoint_create(slug="stripe", scheme="stripe", secret=secret)
    catalog_import(data={"products": [{"provider": "stripe", "price_id": "price_pro", "entitlements": ["pro", "reports"]}]})
    User = get_user_model()
    User.objects.bulk_create([User(username=f"b{i}", email=f"b{i}@example.com") for i in range(args.n)], batch_size=2000)
    users = list(User.objects.values_list("id", flat=True))
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = int(time.time()) - 3600
    for i, user_id in enumerate(users):
        event = se.checkout_completed(session_id=f"cs_{i}", created=created + i, price_id="price_pro", user_id=user_id,
                                      customer=f"cus_{i}", payment_intent=f"pi_{i}")
        body = json.dumps(event).encode()
        webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", secret, body))
    until = datetime.now(UTC) + timedelta(seconds=1)

    def counts() -> dict:
        return {
            "entitlements": Entitlement.objects.count(),
            "notifications": Notification.objects.count(),
            "emails_sent": Notification.objects.filter(channel="email", status="sent").count(),
            "audit_entries": AuditEntry.objects.count(),
        }

    def drain(label: str) -> float:
        started = time.monotonic()
        while WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists():
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"{label}: not drained in {args.timeout}s")
            time.sleep(0.5)
        return time.monotonic() - started

    logs = ROOT / "bench" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    workers = []
    try:
        for i in range(args.workers):
            workers.append(worker_start(env, logs / f"replay-worker{i}.log", name=f"r{i}"))
        first = drain("first pass")
        before = counts()
        print(f"first pass: {args.n} events fulfilled in {first:.1f}s; effects {before}", flush=True)
        started = time.monotonic()
        call_command("replay_events", "--endpoint", "stripe", "--since", since.isoformat(), "--until", until.isoformat())
        enqueue_s = time.monotonic() - started
        replay = drain("replay")
        after = counts()
        statuses = dict(WebhookEvent.objects.values_list("status").annotate(n=Count("id")))
        print(f"replay: enqueued in {enqueue_s:.1f}s, processed again in {replay:.1f}s; effects {after}; statuses {statuses}")
        call_command("verify_audit_chain")
        new_effects = {k: after[k] - before[k] for k in before}
        reprocessed_audit = AuditEntry.objects.filter(action="event.reprocessed").count()
        print(f"new effects: {new_effects} (audit entries include {reprocessed_audit} event.reprocessed operator records)")
        ok = all(v == 0 for k, v in new_effects.items() if k != "audit_entries") and new_effects["audit_entries"] == reprocessed_audit
        print("RESULT:", "zero new effects" if ok else "NEW EFFECTS FOUND")
        return 0 if ok else 1
    finally:
        for worker in workers:
            worker.stop(timeout=30)
        redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()


if __name__ == "__main__":
    sys.exit(main())
