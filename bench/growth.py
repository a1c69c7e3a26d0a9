#!/usr/bin/env python
"""Growth without slowdown: ingest, relay poll and fulfilment with 10 k and with 10 M stored events.

Run from the repo root: `.venv/bin/python bench/growth.py --help`.

1. `setup`: drops and recreates its own PostgreSQL database (payhook_growthbench), migrates (the
   events table is partitioned by month), creates a Stripe endpoint, a catalog and users. The keys it
   generated are kept in bench/results/growth-state.json, so later steps (and a resumed load) use them.
2. `load --target N`: stores events with SQL (`INSERT … SELECT generate_series`, both the key table and
   the events) until N are stored, in batches; resumable (it continues after the last batch done).
   Times are spread evenly over 400 days before the set-up time (a low-discrepancy sequence, so 10 k
   rows spread as 10 M do); rows older than --retention-days are finished with their payload removed,
   as retention leaves them; recent rows carry a real encrypted Stripe body (one of 500 tokens).
3. `measure --label L`: migrates the database to this revision and ANALYZEs it, then in this process,
   with the real services:
   (a) ingest: --events new signed events through `webhook_event_receive`, then each again (a
       redelivery: the duplicate path), events/s of each;
   (b) relay poll: with those events as the backlog, EXPLAIN ANALYZE of the relay's claim query and the
       mean time of --polls polls (in a rolled-back transaction, so the backlog stays);
   (c) fulfilment: the same events processed one by one with `webhook_event_process` (all effects,
       locmem e-mail), events/s.
Results: JSON under bench/results/ (gitignored) and a line per measurement on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.pipeline import CATALOG, SLUG, Events, loadavg, log, redelivered, stripe_signed  # noqa: E402
from bench.store import Store  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SPAN_DAYS = 400
TOKENS = 500

# One generated row per n: its time (400 days back from the anchor, golden-ratio spread) and a
# time-ordered id (uuid7-like: milliseconds first) so index inserts behave as real ones.
_ROWS = """
SELECT n, ts,
       (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7' || lpad(to_hex(n), 19, '0'))::uuid AS id,
       ts < %(cutoff)s AS old
FROM (SELECT n, %(anchor)s::timestamptz - ((n * 0.6180339887498949) %% 1) * %(span)s * interval '1 day' AS ts
      FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n) AS g
"""

_KEYS = f"""
INSERT INTO webhooks_eventkey (idempotency_key, event_id, content_hash, received_at)
SELECT 'growth:evt_g' || n, id, md5(n::text) || md5(n::text), ts FROM ({_ROWS}) AS r
"""

_EVENTS = f"""
INSERT INTO webhooks_webhookevent (id, endpoint_id, idempotency_key, provider_event_id, event_type, status, content_hash,
    body_encrypted, headers_encrypted, received_at, provider_created_at, dispatched_at, processed_at, attempts,
    last_error, lease_holder, traceparent, payload_removed_at)
SELECT id, %(endpoint)s, 'growth:evt_g' || n, 'evt_g' || n, 'invoice.paid',
       CASE WHEN n %% 50 = 0 THEN 'ignored' ELSE 'processed' END, md5(n::text) || md5(n::text),
       CASE WHEN old THEN ''::bytea ELSE (%(tokens)s::bytea[])[1 + n %% {TOKENS}] END,
       CASE WHEN old THEN ''::bytea ELSE (%(headers)s::bytea[])[1 + n %% {TOKENS}] END,
       ts, ts - interval '2 seconds', ts + interval '20 milliseconds', ts + interval '200 milliseconds', 1,
       '', '', '', CASE WHEN old THEN ts + %(retention)s * interval '1 day' END
FROM ({_ROWS}) AS r
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["setup", "load", "measure"])
    p.add_argument("--database", default="payhook_growthbench")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", default=5432, type=int)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--target", type=int, default=10_000, help="load: stored events wanted in total")
    p.add_argument("--batch", type=int, default=100_000, help="load: rows per INSERT")
    p.add_argument("--retention-days", type=int, default=30, help="rows older than this have their payload removed")
    p.add_argument("--label", default="", help="measure: name of this measurement (e.g. 10k)")
    p.add_argument("--events", type=int, default=1000, help="measure: new events received, then redelivered, then processed")
    p.add_argument("--polls", type=int, default=200, help="measure: relay polls timed")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seed", type=int, default=13)
    return p.parse_args(argv)


class Growth:
    def __init__(self, args):
        self.args = args
        self.store = Store(args)
        RESULTS.mkdir(parents=True, exist_ok=True)
        default = args.database == "payhook_growthbench"
        self.state_file = RESULTS / ("growth-state.json" if default else f"growth-state-{args.database}.json")

    # -- state shared by the steps --
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def env(self) -> dict:
        state = self.state()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "SENTRY_", "EMAIL_"))}
        env.update(
            DATABASE_URL=self.store.url, CELERY_BROKER_URL="memory://", DJANGO_SECRET_KEY=state["django_secret"],
            FIELD_ENCRYPTION_KEYS=state["fernet"], BLIND_INDEX_KEY=state["blind"], AUDIT_CHAIN_KEY=state["chain"],
            DJANGO_LOG_LEVEL="WARNING", DJANGO_DEBUG="false", SENTRY_DSN="",
            EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", DJANGO_SETTINGS_MODULE="config.settings",
            PYTHONPATH=str(ROOT), RAW_PAYLOAD_RETENTION_DAYS=str(self.args.retention_days),
        )
        return env

    def manage(self, *argv: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env(), capture_output=True, text=True,
                              timeout=900)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return done.stdout.strip()

    def django(self):
        os.environ.update(self.env())
        import django

        django.setup()

    # -- steps --
    def setup(self) -> None:
        from cryptography.fernet import Fernet

        self.state_file.write_text(json.dumps({
            "django_secret": secrets.token_urlsafe(50), "fernet": Fernet.generate_key().decode(),
            "blind": secrets.token_urlsafe(32), "chain": secrets.token_urlsafe(32),
            "secret": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "anchor": datetime.now(timezone.utc).isoformat(), "loaded": 0,
        }))
        log(f"recreating database {self.args.database}")
        self.store.recreate()
        self.manage("migrate", "--no-input")
        log(self.manage("webhook_endpoint", "create", SLUG, "--scheme", "stripe", "--secret", self.state()["secret"]))
        catalog = RESULTS / "growth-catalog.json"
        catalog.write_text(json.dumps(CATALOG))
        log(self.manage("import_catalog", str(catalog)))
        catalog.unlink()
        self.django()
        from django.contrib.auth import get_user_model

        User = get_user_model()
        User.objects.bulk_create([User(username=f"buyer{i:06d}", email=f"buyer{i:06d}@example.com", password="!unusable")
                                  for i in range(self.args.users)], batch_size=2000)
        log(f"{self.args.users} users")

    def _tokens(self) -> tuple[list[bytes], list[bytes]]:
        """Real encrypted bodies and headers of recent rows, as receiving stores them."""
        from config import encryption

        events = Events([(1, "buyer000001@example.com")], self.args.seed)
        bodies, headers = [], []
        for _ in range(TOKENS):
            body, sent = stripe_signed(self.state()["secret"], events.new("ld")["body"])
            bodies.append(encryption.encrypt(body))
            headers.append(encryption.encrypt(json.dumps(sent).encode()))
        return bodies, headers

    def load(self) -> None:
        args, state = self.args, self.state()
        self.django()
        bodies, headers = self._tokens()
        anchor = datetime.fromisoformat(state["anchor"])
        endpoint = self.store.scalar("SELECT id FROM webhooks_webhookendpoint WHERE slug = %s", [SLUG])
        import psycopg

        loaded = state["loaded"]
        started, at_start = time.monotonic(), loaded
        while loaded < args.target:
            last = min(loaded + args.batch, args.target)
            params = {"first": loaded + 1, "last": last, "anchor": anchor, "span": SPAN_DAYS, "endpoint": endpoint,
                      "cutoff": _minus_days(anchor, args.retention_days), "retention": args.retention_days,
                      "tokens": bodies, "headers": headers}
            with psycopg.connect(self.store.dsn) as conn:  # one transaction per batch: a batch is all or nothing
                conn.execute(_KEYS, params)
                conn.execute(_EVENTS, params)
            loaded = last
            state["loaded"] = loaded
            self.state_file.write_text(json.dumps(state))
            rate = (loaded - at_start) / (time.monotonic() - started)
            log(f"loaded {loaded:,} rows ({rate:,.0f} rows/s this run; load {loadavg()})")
        self.store.execute("ANALYZE webhooks_webhookevent")
        self.store.execute("ANALYZE webhooks_eventkey")

    def measure(self) -> dict:
        args, state = self.args, self.state()
        self.manage("migrate", "--no-input")  # a database loaded by an earlier revision gets what came since
        self.store.execute("ANALYZE")
        self.django()
        from django.db import connection, transaction

        from webhooks.models import WebhookEvent
        from webhooks.processing import webhook_event_process
        from webhooks.receiving import webhook_event_receive

        stored = self.store.scalar("SELECT count(*) FROM webhooks_eventkey")
        users = [(i, f"buyer{i:06d}@example.com") for i in
                 [row[0] for row in self.store_rows("SELECT id FROM auth_user WHERE username LIKE 'buyer%%'")]]
        events = Events(users, args.seed + int(time.time()))
        items = [events.new("ms") for _ in range(args.events)]
        result = {"label": args.label, "stored_events": stored, "events": args.events, "load_before": loadavg()}

        def receive_all(bodies):
            ids = []
            started = time.perf_counter()
            for body in bodies:
                signed, headers = stripe_signed(state["secret"], body)
                ids.append(webhook_event_receive(slug=SLUG, body=signed, headers=headers))
            return ids, args.events / (time.perf_counter() - started)

        received, result["ingest_new_per_s"] = receive_all([item["body"] for item in items])
        assert all(r.created for r in received)
        again, result["ingest_duplicate_per_s"] = receive_all([redelivered(item["body"]) for item in items])
        assert not any(r.created for r in again)

        poll = (WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(status=WebhookEvent.Status.RECEIVED, dispatched_at__isnull=True)
                .order_by("received_at").values_list("id", "traceparent")[:500])
        with transaction.atomic(), connection.cursor() as cursor:
            sql, params = poll.query.sql_with_params()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            result["poll_plan"] = [row[0] for row in cursor.fetchall()]
        started = time.perf_counter()
        for _ in range(args.polls):
            with transaction.atomic():
                assert len(list(poll.all())) >= min(500, args.events)
                transaction.set_rollback(True)
        result["poll_ms"] = round((time.perf_counter() - started) / args.polls * 1000, 3)

        started = time.perf_counter()
        statuses = [webhook_event_process(event_id=r.event_id) for r in received]
        result["fulfil_per_s"] = args.events / (time.perf_counter() - started)
        result["fulfil_statuses"] = {s: statuses.count(s) for s in set(statuses)}
        result["load_after"] = loadavg()
        for key in ("ingest_new_per_s", "ingest_duplicate_per_s", "fulfil_per_s"):
            result[key] = round(result[key], 1)
        out = RESULTS / f"growth-{args.label or stored}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(result, indent=2))
        log(json.dumps({k: v for k, v in result.items() if k != "poll_plan"}))
        log("poll plan: " + " | ".join(line.strip() for line in result["poll_plan"][:6]))
        return result

    def store_rows(self, sql: str, params=()):
        import psycopg

        with psycopg.connect(self.store.dsn, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()


def _minus_days(moment: datetime, days: int) -> datetime:
    from datetime import timedelta

    return moment - timedelta(days=days)


def main(argv=None) -> None:
    args = parse_args(argv)
    growth = Growth(args)
    getattr(growth, args.step)()


if __name__ == "__main__":
    main()
