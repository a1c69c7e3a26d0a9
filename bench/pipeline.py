#!/usr/bin/env python
"""Fulfilment pipeline benchmark: stored Stripe events → 2 Celery workers → entitlements, notifications, audit.

Run from the repo root: `.venv/bin/python bench/pipeline.py` (see --help and docs/benchmarks-pipeline.md).

1. Set-up: drops and recreates its own PostgreSQL database (payhook_pipebench), migrates, creates a Stripe
   endpoint (`manage.py webhook_endpoint create`), imports a catalog (`manage.py import_catalog`),
   creates N users (10 % of them have switched access e-mails off) and flushes its Redis db (8).
2. Phase 1 "drain": stores N unique, realistic Stripe events (checkout.session.completed, invoice.paid,
   invoice.payment_failed built on Stripe's published objects, each naming a catalog price and a user)
   plus 20 % redeliveries through the real receive service, in-process, with NO worker running. Then starts the Procfile `worker` line W times (CELERY_CONCURRENCY=1:
   prefork, acks_late, prefetch 1 from settings), publishes the backlog with the real sweep
   (`webhook_events_dispatch`, WEBHOOK_REDISPATCH_AFTER_SECONDS=0, batches of WEBHOOK_DISPATCH_BATCH_SIZE)
   and measures fulfilled events/s and received_at → processed_at p50/p99.
3. Phase 2 "drain + live": the same backlog again, and while the workers drain it the Procfile `web`
   line (gunicorn) receives new signed events from an open-loop poster at --rate/s (+20 % redeliveries);
   the workers' outbox relay publishes them live. Reports fulfilled/s and latency of the live events.
4. After each phase: every event processed with exactly its expected effects (entitlements,
   notifications, audit entries), zero duplicates by each unique key, no dead letters, no e-mail stuck
   in `sending`, and `manage.py verify_audit_chain` passes.
5. Profile: a further backlog drained with py-spy (--idle, wall clock) on the workers' pool processes
   and their parents; samples are attributed to pipeline steps (claim, decrypt, canonical build,
   customer/entitlement upserts, notifications, audit appends incl. chain-lock wait, commit, Celery).

With --scrape-metrics, every process writes its metrics to one PROMETHEUS_MULTIPROC_DIR and the
Procfile `web` line (started in every phase for this) is scraped at `/metrics` before the workers
start and after the phase drained: the change of each contract metric, summed over the processes,
and the buckets of payhook_payment_to_entitlement_seconds (docs/metrics.md). The drain phase stores
its backlog in this process, not through the web, so only the live phase moves the delivery counters;
five deliveries signed with a wrong secret are sent before the last scrape, so refusals move too.

Results: a table on stdout and JSON under bench/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.procstat import (  # noqa: E402
    machine_busy,
    proc_children,
    proc_cpu_seconds,
    proc_tree_cpu_seconds,
)
from bench.store import Broker, Store  # noqa: E402
from providers import scheme_get  # noqa: E402
from tests.support.processes import Process, procfile_commands, procfile_web_start  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SLUG = "stripe"

CATALOG = {
    "products": [
        {"provider": "stripe", "price_id": "price_pro", "entitlements": ["pro", "reports"], "name": "Pro (one-off)"},
        {"provider": "stripe", "price_id": "price_addon", "entitlements": ["addon"], "name": "Add-on (monthly)"},
        {"provider": "stripe", "price_id": "price_export", "entitlements": ["export"], "name": "Export"},
    ]
}
# Event mix (weights) and, per kind, the effects one event must leave behind.
MIX = {"checkout": 0.55, "invoice_paid": 0.40, "payment_failed": 0.05}
ENTITLEMENTS = {"checkout": 2, "invoice_paid": 1, "payment_failed": 0}
NOTIFICATIONS = 2  # e-mail + in-app for every kind (access_granted or payment_failed)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q):
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1),
            "mean": round(sum(ordered) / len(ordered) * 1000, 1)}


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- Events ----------------------------------------------------------------------------------------


class Events:
    """Realistic Stripe events (published example objects, ids/prices/users set as in
    tests/fulfillment/stripe_events.py), each with the effects it must produce."""

    def __init__(self, users: list[tuple[int, str]], seed: int):
        from providers.stripe import samples

        self.samples = samples
        self.users = users  # (id, email)
        self.rng = random.Random(seed)
        self.run = secrets.token_hex(3)
        self.seq = 0
        self.kinds, self.weights = list(MIX), list(MIX.values())

    def new(self, tag: str) -> dict:
        """{"provider_id", "kind", "user", "body"}: one unique event; users are drawn at random, so
        returning buyers hit existing customer rows."""
        s = self.samples
        self.seq += 1
        i = f"{self.run}{tag}{self.seq:07d}"
        kind = self.rng.choices(self.kinds, self.weights)[0]
        user_id, email = self.rng.choice(self.users)
        created = int(time.time()) - 60
        customer = f"cus_{self.run}{user_id:07d}"
        if kind == "checkout":
            obj = s.stripe_object("checkout.session")
            obj.update(id=f"cs_{i}", mode="payment", customer=customer, client_reference_id=str(user_id),
                       payment_intent=f"pi_{i}", subscription=None, payment_status="paid", status="complete",
                       amount_total=4900, currency="usd", metadata={"price_id": "price_pro"})
            obj["customer_details"]["email"] = email
            event_type = "checkout.session.completed"
        else:
            obj = s.stripe_object("invoice")
            paid = kind == "invoice_paid"
            obj.update(id=f"in_{i}", customer=customer, customer_email=email, status="paid" if paid else "open",
                       amount_paid=1500 if paid else 0, amount_due=1500, metadata={"user_id": str(user_id)})
            line = obj["lines"]["data"][0]
            line["period"] = {"start": created, "end": created + 30 * 86400}
            obj["parent"] = {"type": "subscription_details", "quote_details": None,
                             "subscription_details": {"metadata": None, "subscription": f"sub_{i}"}}
            line["pricing"] = {"type": "price_details", "price_details": {"price": "price_addon", "product": "prod_addon"}}
            obj["payments"] = {"object": "list", "data": [{"id": f"inpay_{i}", "object": "invoice_payment",
                                                           "payment": {"type": "payment_intent", "payment_intent": f"pi_{i}"}}]}
            event_type = "invoice.paid" if paid else "invoice.payment_failed"
        event = s.stripe_event(event_type, obj, event_id=f"evt_{i}", created=created)
        body = json.dumps(event, separators=(",", ":")).encode()
        assert b'"pending_webhooks":1' in body
        return {"provider_id": event["id"], "kind": kind, "user": user_id, "body": body}


def redelivered(body: bytes) -> bytes:
    """What Stripe sends again: the same event with `pending_webhooks` moved on (a volatile field)."""
    return body.replace(b'"pending_webhooks":1', b'"pending_webhooks":2', 1)


STRIPE = scheme_get("stripe")


def stripe_signed(secret: str, body: bytes, event_id: str = "") -> tuple[bytes, dict[str, str]]:
    """(body, headers) as Stripe sends them now, from the provider's own signer."""
    return STRIPE.signed_request(secret=secret, body=body, timestamp=int(time.time()), event_id=event_id)


# --- Open-loop HTTP poster -----------------------------------------------------------------------


async def _post(port: int, request: bytes, timeout: float) -> tuple[float, int, str]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), timeout)  # gunicorn sync: Connection: close
        writer.close()
    except (OSError, asyncio.TimeoutError) as exc:
        return time.perf_counter(), 0, type(exc).__name__
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        code = int(head.split(b" ", 2)[1])
        payload = json.loads(body) if body else {}
        return time.perf_counter(), code, str(payload.get("status") or payload.get("error") or "")
    except (ValueError, IndexError):
        return time.perf_counter(), -1, "unparseable"


async def open_loop(schedule: list[tuple[float, bytes, str]], *, port: int, secret: str, timeout: float,
                    stop: threading.Event) -> list[dict]:
    """Each (offset, body, expected) is sent at t0 + offset whatever happened to the others; signed at send time."""
    t0 = time.perf_counter() + 0.05
    tasks = []
    head = (f"POST /webhooks/{SLUG}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
            "Content-Type: application/json; charset=utf-8\r\nConnection: close\r\n").encode()

    async def one(offset, body, expected):
        scheduled = t0 + offset
        body, headers = stripe_signed(secret, body)
        fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = head + f"{fields}Content-Length: {len(body)}\r\n\r\n".encode() + body
        finished, code, status = await _post(port, request, timeout)
        return {"latency": finished - scheduled, "code": code, "status": status, "expected": expected}

    for offset, body, expected in schedule:
        if stop.is_set():
            break
        delay = t0 + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(offset, body, expected)))
    return list(await asyncio.gather(*tasks))


# --- The benchmark -------------------------------------------------------------------------------


def _statement_kinds(queries) -> collections.Counter:
    """Statements by first word and table ("INSERT fulfillment_entitlement")."""
    kinds = collections.Counter()
    for q in queries:
        sql = q["sql"].lstrip().upper()
        table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', sql)
        kinds[f"{sql.split()[0]} {table.group(1).lower() if table else ''}".strip()] += 1
    return kinds


class Bench:
    def __init__(self, args):
        import psycopg
        from cryptography.fernet import Fernet

        self.args = args
        self.psycopg = psycopg
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.results_dir = ROOT / "bench" / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(args)
        self.broker = Broker(args)
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        # The caller's DJANGO_/DATABASE_/CELERY_/SENTRY_/EMAIL_ settings never leak in; WEBHOOK_* knobs do.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "SENTRY_", "EMAIL_", "WEB_CONCURRENCY", "BIND", "PORT"))}
        self.passthrough = {k: v for k, v in self.env.items() if k.startswith(("WEBHOOK_", "GUNICORN_"))}
        self.env.update(
            PATH=f"{VENV_BIN}:{self.env.get('PATH', '')}",
            DATABASE_URL=self.store.url,
            CELERY_BROKER_URL=self.broker.url,
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
            BLIND_INDEX_KEY=secrets.token_urlsafe(32),
            AUDIT_CHAIN_KEY=secrets.token_urlsafe(32),
            DJANGO_LOG_LEVEL="WARNING",
            DJANGO_DEBUG="false",
            SENTRY_DSN="",
            EMAIL_BACKEND=args.email_backend,
            CELERY_LOG_LEVEL=args.celery_log_level,
            CELERY_CONCURRENCY=str(args.concurrency),
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE="config.settings",
            # The venv installs payhook editable (pointing at one checkout); this checkout's code must
            # win in every process, or a bench run from a clone would measure another tree's code.
            PYTHONPATH=str(ROOT),
        )
        if args.scrape_metrics:
            self.metrics_dir = self.results_dir / f"pipeline-{self.stamp}-prometheus"
            self.metrics_dir.mkdir()
            self.env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        self.expected: dict[str, dict] = {}  # provider event id -> {"kind", "user", "phase"}
        self.opted_out: set[int] = set()
        self.workers: list[Process] = []
        self.result: dict = {"phases": {}}

    # -- set-up --
    def sql(self, query: str, params=(), *, fetch="all"):
        with self.psycopg.connect(self.store.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            if fetch == "all":
                return cur.fetchall()
            if fetch == "one":
                return cur.fetchone()
            return None

    def manage(self, *argv: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=600)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return done.stdout.strip()

    def setup(self) -> None:
        args = self.args
        log(f"recreating database {args.database}; flushing redis db {args.redis_db}")
        self.store.recreate()
        self.broker.flush()
        self.manage("migrate", "--no-input")
        log(self.manage("webhook_endpoint", "create", SLUG, "--scheme", "stripe", "--secret", self.secret))
        catalog = self.results_dir / f"pipeline-{self.stamp}-catalog.json"
        catalog.write_text(json.dumps(CATALOG))
        log(self.manage("import_catalog", str(catalog)))
        catalog.unlink()

        # Django in this process: the real receive and sweep services; the sweep re-publishes at once.
        os.environ.update(self.env)
        os.environ["WEBHOOK_REDISPATCH_AFTER_SECONDS"] = "0"
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        from notifications.models import NotificationPreference

        User = get_user_model()
        rng = random.Random(args.seed)
        users = [User(username=f"buyer{i:06d}", email=f"buyer{i:06d}@example.com", password="!unusable")
                 for i in range(args.users)]
        User.objects.bulk_create(users, batch_size=2000)
        rows = list(User.objects.filter(username__startswith="buyer").values_list("id", "email"))
        self.opted_out = {uid for uid, _ in rows if rng.random() < args.opt_out}
        NotificationPreference.objects.bulk_create(
            [NotificationPreference(user_id=uid, category="access", channel="email", enabled=False) for uid in self.opted_out],
            batch_size=2000)
        self.events = Events(rows, args.seed)
        log(f"{len(rows)} users ({len(self.opted_out)} with access e-mails off); catalog of {len(CATALOG['products'])} prices")

    # -- storing a backlog in-process --
    def store_backlog(self, count: int, phase: str) -> dict:
        from django.db import close_old_connections

        from webhooks.receiving import webhook_event_receive

        items = [self.events.new(phase[:2]) for _ in range(count)]
        redeliveries = random.Random(self.args.seed + 1).sample(items, int(count * self.args.redelivery))
        # Shuffled; a redelivery drawn before its original is moved after all originals.
        order = [("new", it) for it in items] + [("again", it) for it in redeliveries]
        random.Random(self.args.seed + 2).shuffle(order)
        seen, fixed, later = set(), [], []
        for kind, it in order:
            if kind == "again" and it["provider_id"] not in seen:
                later.append((kind, it))
                continue
            seen.add(it["provider_id"])
            fixed.append((kind, it))
        order = fixed + later
        close_old_connections()
        outcomes = collections.Counter()
        t0 = time.perf_counter()
        for kind, it in order:
            body, headers = stripe_signed(self.secret, it["body"] if kind == "new" else redelivered(it["body"]), it["provider_id"])
            result = webhook_event_receive(slug=SLUG, body=body, headers=headers)
            outcomes[f"{kind}:{'accepted' if result.created else 'duplicate'}"] += 1
        seconds = time.perf_counter() - t0
        for it in items:
            self.expected[it["provider_id"]] = {"kind": it["kind"], "user": it["user"], "phase": phase}
        ok = outcomes["new:accepted"] == count and outcomes["again:duplicate"] == len(redeliveries)
        log(f"{phase}: stored {count} events + {len(redeliveries)} redeliveries in {seconds:.1f}s "
            f"({len(order) / seconds:.0f} receive calls/s in-process) {dict(outcomes)} {'OK' if ok else 'UNEXPECTED'}")
        return {"events": count, "redeliveries": len(redeliveries), "seconds": round(seconds, 2),
                "receive_calls_per_s": round(len(order) / seconds, 1), "outcomes": dict(outcomes), "ok": ok}

    # -- processes --
    def workers_start(self) -> list[Process]:
        line = procfile_commands()["worker"]
        for n in range(self.args.workers):
            # Two copies of the same line on one host need distinct node names.
            self.workers.append(Process.shell(f"{line} --hostname pipebench{n + 1}@%h", self.env,
                                              self.results_dir / f"pipeline-{self.stamp}-worker{n + 1}.log", name=f"worker{n + 1}"))
        for proc in self.workers:
            proc.worker_ready_wait(timeout=90)
        return self.workers

    def workers_stop(self) -> None:
        for proc in self.workers:
            proc.stop(timeout=30)
        self.workers = []

    def web_start(self) -> tuple[Process, int]:
        workers = self.args.web_concurrency
        return procfile_web_start(self.env, self.results_dir / f"pipeline-{self.stamp}-web.log", workers=workers,
                                  ready=lambda web: len(proc_children(web.pid)) == workers)

    def pg_backend_cpu(self) -> dict[int, float]:
        return {pid: proc_cpu_seconds(pid) for pid in self.store.backend_pids()}

    def pg_sample(self) -> None:
        """Accumulate CPU of this database's backends (first and last value seen per pid)."""
        for pid, cpu in self.pg_backend_cpu().items():
            first, _ = self._pg_seen.get(pid, (None, None))
            self._pg_seen[pid] = (cpu if first is None else first, cpu)

    def pg_cpu_total(self) -> float:
        return sum(last - (first if pid in self._pg_base else 0.0) for pid, (first, last) in self._pg_seen.items())

    def sweep_publish(self) -> int:
        """Wait (bounded) until the workers' outbox relay has published the stored backlog; returns
        how many stored events are marked dispatched."""
        deadline = time.time() + 300
        while time.time() < deadline:
            [(left,)] = self.sql("SELECT count(*) FROM webhooks_webhookevent WHERE status = 'received' AND dispatched_at IS NULL")
            if left == 0:
                break
            time.sleep(0.05)
        [(published,)] = self.sql("SELECT count(*) FROM webhooks_webhookevent WHERE dispatched_at IS NOT NULL")
        return published

    def status_counts(self, phase_ids: list[str]) -> dict:
        rows = self.sql("SELECT status, count(*) FROM webhooks_webhookevent WHERE provider_event_id = ANY(%s) GROUP BY status",
                        (phase_ids,))
        return dict(rows)

    def wait_done(self, phase_ids: list[str], *, timeout: float, poster: threading.Thread | None = None, strict: bool = True) -> float:
        """Poll until every event of the phase is finished (processed/ignored/dead). Returns when."""
        deadline = time.monotonic() + timeout
        last_log = 0.0
        while time.monotonic() < deadline:
            counts = self.status_counts(phase_ids)
            self.pg_sample()
            done = sum(counts.get(s, 0) for s in ("processed", "ignored", "dead"))
            if done >= len(phase_ids) and (poster is None or not poster.is_alive()):
                return time.time()
            if time.monotonic() - last_log > 10:
                log(f"  progress: {counts} of {len(phase_ids)}; load {loadavg()}")
                last_log = time.monotonic()
            for proc in self.workers:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} died:\n{proc.log()[-3000:]}")
            time.sleep(0.5)
        if strict:
            raise RuntimeError(f"phase not drained within {timeout:.0f}s: {self.status_counts(phase_ids)}")
        log(f"  measurement window closed after {timeout:.0f}s: {self.status_counts(phase_ids)}")
        return time.time()

    def emails_settled(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.sql("SELECT count(*) FROM notifications_notification WHERE status = 'sending'", fetch="one")[0]
            if n == 0:
                return 0
            time.sleep(0.5)
        return n

    # -- one drain phase (optionally with live ingestion) --
    def run_drain(self, phase: str, *, live: bool) -> dict:
        args = self.args
        stored = self.store_backlog(args.live_backlog if live else args.n, phase)
        backlog_ids = [pid for pid, e in self.expected.items() if e["phase"] == phase]
        log(f"{phase}: starting {args.workers} worker process(es), concurrency {args.concurrency}; load {loadavg()}")
        web = port = None
        schedule = []
        if live or args.scrape_metrics:
            web, port = self.web_start()
        if live:
            schedule = self.live_schedule(phase)
        metrics_before = metrics_scrape(port) if args.scrape_metrics else ""
        self.workers_start()
        cpu0 = {p.name: proc_tree_cpu_seconds(p.pid) for p in self.workers}
        self._pg_seen, self._pg_base = {}, set()
        self.pg_sample()
        self._pg_base = set(self._pg_seen)
        machine0 = machine_busy()
        t0 = time.time()
        poster = None
        poster_out: list = []
        stop = threading.Event()
        # The backlog first: the sweep would otherwise also publish live events not yet processed
        # (WEBHOOK_REDISPATCH_AFTER_SECONDS=0 here), a second message each.
        published = self.sweep_publish()
        publish_s = time.time() - t0
        log(f"{phase}: outbox relay published {published} events in {publish_s:.2f}s (batches of ≤{self._batch_size()})")
        if live:
            def post():
                poster_out.extend(asyncio.run(open_loop(schedule, port=port, secret=self.secret, timeout=30, stop=stop)))

            poster = threading.Thread(target=post, name="poster", daemon=True)
            poster.start()
        try:
            if live:
                poster.join(timeout=args.live_seconds + 120)
                stop.set()
                live_ids = [pid for pid, e in self.expected.items() if e["phase"] == phase + "-live"]
                window = args.live_window_seconds - (time.time() - t0)
                t_end = self.wait_done(backlog_ids + live_ids, timeout=max(window, 1), strict=False)
            else:
                t_end = self.wait_done(backlog_ids, timeout=args.max_drain_seconds)
            cpu1 = {p.name: proc_tree_cpu_seconds(p.pid) for p in self.workers}
            self.pg_sample()
            machine1 = machine_busy()
            web_cpu = proc_tree_cpu_seconds(web.pid) if web else {}
            parents = {p.name: p.pid for p in self.workers}
            if live:  # after the window: let everything finish so the checks see final state
                self.wait_done(backlog_ids + live_ids, timeout=args.max_drain_seconds)
            if args.scrape_metrics:
                refusals_send(port, count=5)  # the refusal counter moves too (nothing is stored)
                time.sleep(1)  # a grant's observation follows its commit
                metrics_after = metrics_scrape(port)
        finally:
            stop.set()
            self.workers_stop()
            if web:
                web.stop(timeout=30)
        sending = self.emails_settled()
        out = {"stored": stored, "published_by_sweep": published, "load_at_end": loadavg()}
        ids = backlog_ids + ([pid for pid, e in self.expected.items() if e["phase"] == phase + "-live"] if live else [])
        timing = self.sql(
            "SELECT provider_event_id, extract(epoch from received_at), extract(epoch from processed_at) "
            "FROM webhooks_webhookevent WHERE provider_event_id = ANY(%s)", (ids,))
        by_id = {r[0]: (float(r[1]), float(r[2]) if r[2] is not None else None) for r in timing}
        done_at = sorted(v[1] for v in by_id.values() if v[1] is not None and v[1] <= t_end)
        out["measured_until_s"] = round(t_end - t0, 1)
        out["finished_in_window"] = len(done_at)
        last = done_at[-1] if done_at else t0
        n_done = len(done_at)
        # Rate over the whole drain (first publish → last event processed), and in its middle
        # 10 %–90 % of completions (no worker start-up/tail effects).
        out["fulfilled_per_s"] = round(n_done / (last - t0), 1) if last > t0 else 0.0
        lo, hi = (done_at[int(0.1 * n_done)], done_at[int(0.9 * n_done) - 1]) if n_done >= 10 else (0, 0)
        out["fulfilled_per_s_middle_80pct"] = round((int(0.9 * n_done) - int(0.1 * n_done)) / (hi - lo), 1) if hi > lo else None
        out["drain_seconds"] = round(last - t0, 2)
        out["first_done_after_s"] = round(done_at[0] - t0, 2) if done_at else None
        lat = lambda pids: [by_id[p][1] - by_id[p][0] for p in pids if p in by_id and by_id[p][1] is not None]
        out["backlog_latency_ms"] = percentiles(lat(backlog_ids))
        if live:
            live_ids = [pid for pid, e in self.expected.items() if e["phase"] == phase + "-live"]
            backlog_done = max((by_id[p][1] for p in backlog_ids if by_id.get(p, (0, None))[1] is not None), default=t0)
            out["live_events"] = len(live_ids)
            out["live_latency_ms"] = percentiles(lat(live_ids))
            out["live_latency_after_backlog_ms"] = percentiles(lat([p for p in live_ids if p in by_id and by_id[p][0] > backlog_done]))
            out["live_latency_during_backlog_ms"] = percentiles(lat([p for p in live_ids if p in by_id and by_id[p][0] <= backlog_done]))
            out["backlog_done_after_s"] = round(backlog_done - t0, 1)
            # Per 10 s of receipt: how many live events arrived, their median latency.
            windows = collections.defaultdict(list)
            for p in live_ids:
                if p in by_id and by_id[p][1] is not None:
                    windows[int((by_id[p][0] - t0) // 10) * 10].append(by_id[p][1] - by_id[p][0])
            out["live_latency_by_10s_window"] = {f"{k}s": {"n": len(v), "p50_ms": percentiles(v)["p50"], "p99_ms": percentiles(v)["p99"]}
                                                 for k, v in sorted(windows.items())}
            done_live = sorted(by_id[p][1] for p in live_ids if p in by_id and by_id[p][1] is not None and by_id[p][1] <= t_end)
            out["live_fulfilled_per_s"] = round(len(done_live) / (done_live[-1] - t0), 1) if done_live else 0.0
            posted = collections.Counter(f"{o['expected']}→{o['code']} {o['status']}" for o in poster_out)
            out["http"] = {"requests": len(poster_out), "outcomes": dict(posted),
                           "latency_ms": percentiles([o["latency"] for o in poster_out]),
                           "rate_new_per_s": args.rate, "seconds": args.live_seconds}
        worker_cpu = sum(sum(cpu1[n].get(pid, 0) - cpu0[n].get(pid, 0) for pid in cpu1[n]) for n in cpu1)
        parent_cpu = sum(cpu1[n].get(parents[n], 0) - cpu0[n].get(parents[n], 0) for n in cpu1)
        pg_cpu = self.pg_cpu_total()
        busy = (machine1[1] - machine0[1]) / (machine1[0] - machine0[0]) if machine1[0] > machine0[0] else None
        out["cpu"] = {
            "worker_processes_ms_per_event": round(1000 * worker_cpu / max(n_done, 1), 2),
            "of_which_celery_parents_ms_per_event": round(1000 * parent_cpu / max(n_done, 1), 2),
            "postgres_backends_ms_per_event": round(1000 * pg_cpu / max(n_done, 1), 2),
            "web_s": round(sum(web_cpu.values()), 1) if web else None,
            "machine_busy_pct": round(100 * busy, 1) if busy is not None else None,
        }
        out["emails_stuck_sending"] = sending
        if args.scrape_metrics:
            out["metrics"] = metrics_change(metrics_before, metrics_after)
            log(f"{phase}: /metrics change over the phase, summed over every process:\n{metrics_table(out['metrics'])}")
        out["checks"] = self.verify(ids)
        out["passed"] = out["checks"]["passed"] and stored["ok"] and (not live or out["http"]["outcomes"].keys() <= {"new→200 accepted", "again→200 duplicate"})
        self.result["phases"][phase] = out
        log(f"{phase}: {n_done} fulfilled in {out['drain_seconds']}s = {out['fulfilled_per_s']}/s "
            f"(middle 80 %: {out['fulfilled_per_s_middle_80pct']}/s); backlog latency {out['backlog_latency_ms']}; "
            f"cpu {out['cpu']}; checks {'OK' if out['passed'] else 'FAILED'}; load {loadavg()}")
        if live:
            log(f"{phase}: live {out['live_events']} events, fulfilled {out['live_fulfilled_per_s']}/s, latency {out['live_latency_ms']}; "
                f"after backlog {out['live_latency_after_backlog_ms']}; http {out['http']['outcomes']} {out['http']['latency_ms']}")
        return out

    def run_noop(self) -> dict:
        """The same workers draining K no-op tasks (`payhook.noop_probe`): Celery's own ceiling per
        message on this machine, measured in the same run as the fulfilment drain.

        The K messages are published before the workers start; the clock runs from the moment every
        worker is ready until the queue and the unacked set are empty (the probe is acks_late, so a
        message leaves the unacked set only when it has run)."""
        from config.celery_app import app

        args, queue = self.args, self._queue()
        count = args.noop_tasks
        t = time.time()
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                app.send_task("payhook.noop_probe", producer=producer)
        log(f"noop: published {count} no-op tasks in {time.time() - t:.2f}s; starting {args.workers} worker process(es); "
            f"load {loadavg()}")
        self.workers_start()
        cpu0 = {p.name: proc_tree_cpu_seconds(p.pid) for p in self.workers}
        t0 = time.time()
        deadline = t0 + args.max_drain_seconds
        left = count
        while time.time() < deadline:
            left = self.broker.client.llen(queue) + self.broker.client.hlen("unacked")
            if left == 0:
                break
            time.sleep(0.02)
        seconds = time.time() - t0
        cpu1 = {p.name: proc_tree_cpu_seconds(p.pid) for p in self.workers}
        self.workers_stop()
        worker_cpu = sum(sum(cpu1[n].get(pid, 0) - cpu0[n].get(pid, 0) for pid in cpu1[n]) for n in cpu1)
        out = {"tasks": count, "left": left, "seconds": round(seconds, 2),
               "tasks_per_s": round((count - left) / seconds, 1) if seconds > 0 else None,
               "worker_cpu_ms_per_task": round(1000 * worker_cpu / max(count - left, 1), 2), "load_at_end": loadavg(),
               "passed": left == 0}
        self.result["phases"]["noop"] = out
        log(f"noop: {count - left} no-op tasks in {out['seconds']}s = {out['tasks_per_s']}/s; "
            f"worker CPU {out['worker_cpu_ms_per_task']} ms/task; load {loadavg()}")
        return out

    def _queue(self) -> str:
        from django.conf import settings

        return settings.CELERY_TASK_DEFAULT_QUEUE

    def _batch_size(self) -> int:
        from django.conf import settings

        return settings.WEBHOOK_DISPATCH_BATCH_SIZE

    def live_schedule(self, phase: str) -> list[tuple[float, bytes, str]]:
        """New events at --rate/s for --live-seconds; --redelivery of them sent again 3 s later."""
        args = self.args
        rng = random.Random(args.seed + 3)
        schedule = []
        for k in range(int(args.rate * args.live_seconds)):
            it = self.events.new("lv")
            offset = k / args.rate
            self.expected[it["provider_id"]] = {"kind": it["kind"], "user": it["user"], "phase": phase + "-live"}
            schedule.append((offset, it["body"], "new"))
            if rng.random() < args.redelivery and offset + 3 < args.live_seconds:
                schedule.append((offset + 3, redelivered(it["body"]), "again"))
        schedule.sort(key=lambda s: s[0])
        return schedule

    # -- correctness --
    def verify(self, ids: list[str]) -> dict:
        exp = {pid: self.expected[pid] for pid in ids}
        rows = self.sql(
            """
            SELECT e.provider_event_id, e.status,
                   (SELECT count(*) FROM fulfillment_entitlement t WHERE t.last_event_id = e.id AND t.status = 'active'),
                   (SELECT count(*) FROM notifications_notification n WHERE n.event_id = e.id),
                   (SELECT count(*) FROM notifications_notification n WHERE n.event_id = e.id AND n.channel = 'email' AND n.status = 'sent'),
                   (SELECT count(*) FROM notifications_notification n WHERE n.event_id = e.id AND n.status = 'suppressed'),
                   (SELECT count(*) FROM audit_auditentry a WHERE a.event_id = e.id),
                   (SELECT count(*) FROM audit_auditentry a WHERE a.event_id = e.id AND a.action = 'entitlement.granted'),
                   (SELECT count(*) FROM audit_auditentry a WHERE a.event_id = e.id AND a.action LIKE 'notification.%%')
            FROM webhooks_webhookevent e WHERE e.provider_event_id = ANY(%s)
            """, (ids,))
        seen = {r[0]: r[1:] for r in rows}
        lost = collections.Counter()
        extra = collections.Counter()
        fulfilled = 0
        for pid, e in exp.items():
            row = seen.get(pid)
            if row is None:
                lost["event_not_stored"] += 1
                continue
            status, ents, notes, emails, suppressed, audits, granted, note_audits = row
            opted = e["user"] in self.opted_out and e["kind"] != "payment_failed"
            want = {"ents": ENTITLEMENTS[e["kind"]], "notes": NOTIFICATIONS, "emails": 0 if opted else 1,
                    "suppressed": 1 if opted else 0, "granted": ENTITLEMENTS[e["kind"]], "note_audits": NOTIFICATIONS}
            want["audits"] = 1 + want["granted"] + want["note_audits"]
            got = {"ents": ents, "notes": notes, "emails": emails, "suppressed": suppressed, "granted": granted,
                   "note_audits": note_audits, "audits": audits}
            ok = status == "processed"
            if not ok:
                lost[f"status_{status}"] += 1
            for key in want:
                if got[key] < want[key]:
                    lost[key] += 1
                    ok = False
                elif got[key] > want[key]:
                    extra[key] += 1
                    ok = False
            fulfilled += ok
        dup = {
            "entitlement (customer,key,source)": "SELECT count(*) FROM (SELECT 1 FROM fulfillment_entitlement GROUP BY customer_id, key, source HAVING count(*) > 1) d",
            "notification (event,user,channel,template)": "SELECT count(*) FROM (SELECT 1 FROM notifications_notification GROUP BY event_id, user_id, channel, template HAVING count(*) > 1) d",
            "audit dedup_key": "SELECT count(*) FROM (SELECT 1 FROM audit_auditentry WHERE dedup_key IS NOT NULL GROUP BY dedup_key HAVING count(*) > 1) d",
            "audit (event,action,entitlement,channel) without key": "SELECT count(*) FROM (SELECT 1 FROM audit_auditentry WHERE event_id IS NOT NULL GROUP BY event_id, action, data->>'entitlement', data->>'channel', data->>'template' HAVING count(*) > 1) d",
            "stored event per idempotency key": "SELECT count(*) FROM (SELECT 1 FROM webhooks_webhookevent GROUP BY idempotency_key HAVING count(*) > 1) d",
        }
        duplicates = {name: self.sql(q, fetch="one")[0] for name, q in dup.items()}
        dead_letters = self.sql("SELECT count(*) FROM webhooks_deadletter", fetch="one")[0]
        sending = self.sql("SELECT count(*) FROM notifications_notification WHERE status = 'sending'", fetch="one")[0]
        failed = self.sql("SELECT count(*) FROM notifications_notification WHERE status = 'failed'", fetch="one")[0]
        try:
            chain = self.manage("verify_audit_chain")
            chain_ok = (chain.strip().splitlines() or [""])[-1].startswith("OK ")
        except RuntimeError as exc:
            chain, chain_ok = str(exc)[-500:], False
        totals = dict(self.sql(
            "SELECT 'entitlements', count(*) FROM fulfillment_entitlement UNION ALL SELECT 'notifications', count(*) FROM notifications_notification "
            "UNION ALL SELECT 'audit_entries', count(*) FROM audit_auditentry UNION ALL SELECT 'events', count(*) FROM webhooks_webhookevent"))
        checks = {
            "events": len(exp), "fulfilled_exactly": fulfilled, "lost": dict(lost), "extra_effects": dict(extra),
            "duplicates_by_unique_key": duplicates, "dead_letters": dead_letters, "emails_sending": sending,
            "emails_failed": failed, "audit_chain": chain, "totals_in_database": totals,
        }
        checks["passed"] = (fulfilled == len(exp) and not lost and not extra and not any(duplicates.values())
                            and dead_letters == 0 and sending == 0 and failed == 0 and chain_ok)
        log(f"verify: {fulfilled}/{len(exp)} fulfilled exactly; lost {dict(lost)}; extra {dict(extra)}; dups {duplicates}; "
            f"dead letters {dead_letters}; sending {sending}; {chain}")
        return checks

    # -- profile --
    def run_profile(self) -> dict:
        args = self.args
        py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
        if not py_spy:
            log("py-spy not installed (.venv/bin/pip install py-spy==0.4.3): no profile")
            return {"error": "py-spy not installed"}
        phase = "profile"
        self.store_backlog(args.profile_events, phase)
        ids = [pid for pid, e in self.expected.items() if e["phase"] == phase]
        self.workers_start()
        self.sweep_publish()
        time.sleep(3.0)  # past start-up: the workers are draining
        raws, spies = [], []
        before = sum(self.status_counts(ids).get(s, 0) for s in ("processed", "ignored", "dead"))
        t0 = time.time()
        for proc in self.workers:
            raw = self.results_dir / f"pipeline-{self.stamp}-profile-{proc.name}.txt"
            cmd = [py_spy, "record", "--pid", str(proc.pid), "--subprocesses", "--idle", "--nonblocking",
                   "--rate", str(args.profile_rate), "--duration", str(int(args.profile_seconds)), "--format", "raw", "--output", str(raw)]
            spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            raws.append(raw)
        errors = []
        for spy in spies:
            try:
                _, err = spy.communicate(timeout=args.profile_seconds + 60)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
            if spy.returncode:
                errors.append(err.decode(errors="replace")[-400:])
        profiled_s = time.time() - t0
        during = sum(self.status_counts(ids).get(s, 0) for s in ("processed", "ignored", "dead")) - before
        try:
            self.wait_done(ids, timeout=args.max_drain_seconds)
        finally:
            self.workers_stop()
        self.emails_settled()
        text = "\n".join(r.read_text() for r in raws if r.exists())
        if not text.strip():
            return {"error": " | ".join(errors) or "no samples"}
        prof = profile_summarise(text, rate=args.profile_rate, events=max(during, 1))
        prof.update(events_during_profile=during, seconds=round(profiled_s, 1), raw_files=[str(r.relative_to(ROOT)) for r in raws],
                    errors=errors, checks_passed=self.verify(ids)["passed"])
        return prof

    def query_count(self) -> dict:
        """Round trips of one (warm) checkout event, in-process (same code as a worker), by statement kind."""
        from django.db import close_old_connections, connection
        from django.test.utils import CaptureQueriesContext

        from webhooks.processing import webhook_event_process

        close_old_connections()
        self.store_backlog(200, "queries")
        ids = [r[0] for r in self.sql("SELECT id::text FROM webhooks_webhookevent WHERE status = 'received' AND event_type = 'checkout.session.completed' ORDER BY received_at LIMIT 3")]
        out = {}
        for event_id in ids[:2]:  # warm-up: templates, schema validators, first connection
            webhook_event_process(event_id=event_id)
        for event_id in ids[2:3]:
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                webhook_event_process(event_id=event_id)
                ms = (time.perf_counter() - t) * 1000
            kinds = _statement_kinds(ctx.captured_queries)
            out = {"statements": len(ctx.captured_queries), "by_kind": dict(kinds.most_common()), "in_process_ms": round(ms, 1)}
        # The set-based path (webhook_events_claim + webhook_events_fulfil, as the task runs it) on a
        # batch of 20 checkout events, e-mails after the commit included as above.
        from webhooks.processing import webhook_events_claim, webhook_events_fulfil

        batch = [r[0] for r in self.sql(
            "SELECT id::text FROM webhooks_webhookevent WHERE status = 'received' AND attempts = 0 "
            "AND event_type = 'checkout.session.completed' ORDER BY received_at LIMIT 20")]
        if len(batch) == 20:
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                claimed = webhook_events_claim(event_ids=batch)
                webhook_events_fulfil(event_ids=[e for e in batch if e in claimed])
                ms = (time.perf_counter() - t) * 1000
            kinds = _statement_kinds(ctx.captured_queries)
            out["batch_of_20"] = {"statements": len(ctx.captured_queries), "per_event": round(len(ctx.captured_queries) / 20, 2),
                                  "by_kind": dict(kinds.most_common()), "in_process_ms_per_event": round(ms / 20, 2)}
        # Remaining sample events stay `received`; they are not part of any phase's checks.
        for pid in [p for p, e in self.expected.items() if e["phase"] == "queries"]:
            del self.expected[pid]
        return out

    # -- whole run --
    def machine_info(self) -> dict:
        from importlib.metadata import version

        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        versions = {}
        for dist in ("Django", "celery", "kombu", "gunicorn", "psycopg", "jsonschema", "cryptography", "py-spy"):
            try:
                versions[dist] = version(dist)
            except Exception:
                versions[dist] = None
        return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(int(mem) / 1024 / 1024, 1),
                "kernel": platform.release(), "python": platform.python_version(),
                "postgresql": self.store.version(),
                "packages": versions, "loadavg_start": loadavg()}

    def run(self) -> dict:
        args = self.args
        started = time.time()
        commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "*.py"],
                               capture_output=True, text=True).stdout.strip()
        self.result.update(benchmark="payhook pipeline", label=args.label, code=str(ROOT), commit=commit,
                           uncommitted_python_changes=dirty.splitlines(),
                           command=" ".join([".venv/bin/python", "bench/pipeline.py", *sys.argv[1:]]),
                           options=vars(args), env_passthrough=self.passthrough, machine=self.machine_info())
        self.setup()
        self.result["batch_size"] = self._batch_size()
        if "drain" in args.phases:
            self.run_drain("drain", live=False)
        if "noop" in args.phases:
            self.run_noop()
        if "live" in args.phases:
            self.run_drain("live", live=True)
        if "queries" in args.phases:
            self.result["one_event_statements"] = self.query_count()
            log(f"one checkout event in-process: {self.result['one_event_statements']}")
        if "profile" in args.phases and args.profile_seconds > 0:
            self.result["profile"] = self.run_profile()
            log("profile: " + json.dumps({k: v for k, v in self.result["profile"].items() if k != "top_leaf_functions_pct"}))
        self.result["machine"]["loadavg_end"] = loadavg()
        self.result["wall_seconds"] = round(time.time() - started, 1)
        phases = self.result["phases"].values()
        self.result["all_checks_passed"] = all(p["passed"] for p in phases)
        return self.result

    def cleanup(self) -> None:
        self.workers_stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        try:
            self.broker.flush()
        except Exception as exc:
            log(f"redis flush failed: {exc}")
        if not self.args.keep_database:
            try:
                self.store.drop()
            except Exception as exc:
                log(f"drop database failed: {exc}")


# --- /metrics during the benchmark (--scrape-metrics) ------------------------------------------------

CONTRACT_METRICS = [
    ("payhook_webhook_events_total", "counter"), ("payhook_webhook_refused_total", "counter"),
    ("payhook_event_processing_seconds", "histogram"), ("payhook_payment_to_entitlement_seconds", "histogram"),
    ("payhook_events_backlog", "gauge"), ("payhook_oldest_unprocessed_event_age_seconds", "gauge"),
    ("payhook_dead_letters_open", "gauge"), ("payhook_task_retries_total", "counter"), ("payhook_replays_total", "counter"),
    ("payhook_unprovisioned_payments", "gauge"),
]


def metrics_scrape(port: int) -> str:
    import urllib.request

    token = os.environ.get("METRICS_TOKEN", "")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def refusals_send(port: int, *, count: int) -> None:
    """Deliveries signed with a secret the endpoint does not hold: each a 400 invalid_signature."""
    import urllib.error
    import urllib.request

    for n in range(count):
        body, headers = stripe_signed("whsec_" + secrets.token_hex(16), json.dumps({"id": f"evt_refused_{n}"}).encode())
        request = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/{SLUG}/", data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 400, exc.code


def _metric_sums(text: str) -> dict:
    """Sample name (+ outcome/reason/status/le where it has one) -> value summed over the other labels."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict = collections.defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] += sample.value
            if sample.name.endswith("_bucket") and not sample.name.startswith("payhook_payment_to_entitlement"):
                continue  # the count, sum and the SLO histogram's buckets tell enough
            for label in ("outcome", "reason", "status", "le"):
                if label in sample.labels:
                    sums[f"{sample.name}{{{label}={sample.labels[label]}}}"] += sample.value
    return sums


def metrics_change(before: str, after: str) -> dict:
    """Per contract metric: before, after and change (counters: the total; histograms: _count and
    _sum; gauges: the value), the per-label changes, and the SLO histogram's bucket changes."""
    b, a = _metric_sums(before), _metric_sums(after)
    out = {}
    for name, kind in CONTRACT_METRICS:
        keys = [f"{name}_count", f"{name}_sum"] if kind == "histogram" else [name]
        for key in keys:
            out[key] = {"present": key in a, "before": round(b.get(key, 0.0), 3), "after": round(a.get(key, 0.0), 3),
                        "change": round(a.get(key, 0.0) - b.get(key, 0.0), 3)}
    for key in sorted(a):
        if "{" in key and not key.startswith("payhook_payment_to_entitlement_seconds_bucket") and a[key] != b.get(key, 0.0):
            out[key] = {"present": True, "before": round(b.get(key, 0.0), 3), "after": round(a[key], 3),
                        "change": round(a[key] - b.get(key, 0.0), 3)}
    buckets = sorted((k for k in a if k.startswith("payhook_payment_to_entitlement_seconds_bucket{")),
                     key=lambda k: float(k.split("=", 1)[1].rstrip("}")))
    out["payment_to_entitlement_buckets"] = {k.split("=", 1)[1].rstrip("}"): round(a[k] - b.get(k, 0.0)) for k in buckets}
    return out


def metrics_table(change: dict) -> str:
    rows = [f"  {'metric':<72} {'before':>12} {'after':>12} {'change':>10}"]
    for key, row in change.items():
        if key != "payment_to_entitlement_buckets":
            mark = "" if row["present"] else "  (absent)"
            rows.append(f"  {key:<72} {row['before']:>12g} {row['after']:>12g} {row['change']:>+10g}{mark}")
    rows.append("  payhook_payment_to_entitlement_seconds buckets (le: grants added, cumulative): "
                + ", ".join(f"{le}: {n}" for le, n in change["payment_to_entitlement_buckets"].items()))
    return "\n".join(rows)


# --- Profile summary --------------------------------------------------------------------------------

# (category, markers) — a sample goes to the first category with a marker in any frame of its stack.
PROFILE_CATEGORIES = [
    ("e-mail delivery after commit (render, send, mark sent + its audit append)", ["notification_emails_deliver (notifications/services.py", "notification_email_deliver (notifications/services.py"]),
    ("audit: waiting for / locking a chain shard head", ["_chain_shard_lock (audit/services.py"]),
    ("audit: redaction", ["(audit/redaction.py"]),
    ("audit: rest of append (dedup SELECT, hash, INSERT, subjects, head UPDATE)",
     ["audit_entry_append (audit/services.py", "audit_entries_append (audit/services.py", "_entries_append_chained (audit/services.py",
      "flush (config/unit_of_work.py"]),
    ("Fernet decrypt/encrypt (body, buyer e-mail)", ["(config/encryption.py", "cryptography/fernet.py"]),
    ("canonical build + jsonschema", ["canonical_events_build (canonical/envelope.py"]),
    ("customer upsert (user lookup, get_or_create FOR UPDATE)", ["customer_resolve (fulfillment/services.py"]),
    ("entitlement upserts (catalog lookup, revocation check, get_or_create)", ["entitlement_grant (fulfillment/services.py", "_entitlement_keys (fulfillment/services.py"]),
    ("notification rows (preferences, render, get_or_create)", ["notification_send (notifications/services.py"]),
    ("claim UPDATE (own transaction)", ["_attempt_claim (webhooks/processing.py"]),
    ("batch: prefetching the catalog, users and preferences", ["__init__ (fulfillment/reads.py"]),
    ("batch: claim UPDATE (one autocommitted statement for the batch)", ["webhook_events_claim (webhooks/processing.py"]),
    ("commit", ["commit (django/db/backends/base/base.py", "_commit (django/db/backends"]),
    ("batch: row locks, decrypt/build outside the above, status UPDATE", ["webhook_events_fulfil (webhooks/processing.py"]),
    ("event row lock (SELECT … FOR UPDATE SKIP LOCKED) + status UPDATE + BEGIN", ["webhook_event_process (webhooks/processing.py"]),
    ("Django DB connection housekeeping (task signals)", ["close_old_connections", "close_if_unusable_or_obsolete"]),
    ("rest of the task body", ["webhook_events_process (webhooks/tasks.py"]),
]


def profile_summarise(text: str, *, rate: int, events: int) -> dict:
    pool: collections.Counter = collections.Counter()
    parent: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total_pool = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        in_pool = any("(billiard/pool.py" in f or "(billiard/process.py" in f for f in frames) and "workloop" in stack
        if not in_pool:  # the Celery parent (consumer): its CPU is measured from /proc in the drain phases
            parent["samples"] += count
            continue
        total_pool += count
        if "webhook_events_process (webhooks/tasks.py" not in stack:
            waiting = any(m in stack for m in ("recv (", "_recv (", "poll (", "wait (", "read (")) and "on_task" not in stack
            pool["idle: waiting for the next task" if waiting and "receive" in stack else "Celery/billiard per-task overhead (pool child)"] += count
            continue
        for name, markers in PROFILE_CATEGORIES:
            if any(marker in frame for marker in markers for frame in frames):
                pool[name] += count
                break
        else:
            pool["other"] += count
        leaves[re.sub(r":\d+\)$", ")", frames[-1])] += count
    seconds = lambda n: n / rate
    return {
        "samples_pool": total_pool,
        "pool_categories": {name: {"pct": round(100 * n / max(total_pool, 1), 1), "ms_per_event": round(1000 * seconds(n) / events, 2)}
                            for name, n in pool.most_common()},
        "samples_parents": parent["samples"],
        "top_leaf_functions_pct": {name: round(100 * n / max(total_pool, 1), 1) for name, n in leaves.most_common(15)},
        "note": "py-spy --idle: wall-clock samples of the pool processes (CPU and waits on PostgreSQL/locks alike); "
                "ms_per_event = sampled seconds in the category across all pool processes / events finished while sampling",
    }


# --- Output -----------------------------------------------------------------------------------------


def table(result: dict) -> str:
    lines = []
    rows = [("metric", "drain (no ingestion)", "drain + live ingestion")]
    d, l = result["phases"].get("drain", {}), result["phases"].get("live", {})
    g = lambda p, *keys: (lambda v: "-" if v is None else str(v))(_dig(p, keys))
    rows.append(("events drained (backlog)", g(d, "stored", "events"), g(l, "stored", "events")))
    rows.append(("fulfilled events/s (first publish → last done)", g(d, "fulfilled_per_s"), g(l, "fulfilled_per_s")))
    rows.append(("fulfilled events/s, middle 80 % of completions", g(d, "fulfilled_per_s_middle_80pct"), g(l, "fulfilled_per_s_middle_80pct")))
    rows.append(("backlog receipt→done p50 / p99 ms", f"{g(d, 'backlog_latency_ms', 'p50')} / {g(d, 'backlog_latency_ms', 'p99')}",
                 f"{g(l, 'backlog_latency_ms', 'p50')} / {g(l, 'backlog_latency_ms', 'p99')}"))
    if l:
        rows.append(("live events (posted over HTTP)", "-", g(l, "live_events")))
        rows.append(("live receipt→done p50 / p99 ms, all", "-", f"{g(l, 'live_latency_ms', 'p50')} / {g(l, 'live_latency_ms', 'p99')}"))
        rows.append(("live receipt→done p50 / p99 ms, after backlog", "-",
                     f"{g(l, 'live_latency_after_backlog_ms', 'p50')} / {g(l, 'live_latency_after_backlog_ms', 'p99')} (n={g(l, 'live_latency_after_backlog_ms', 'n')})"))
        rows.append(("HTTP p50 / p99 ms", "-", f"{g(l, 'http', 'latency_ms', 'p50')} / {g(l, 'http', 'latency_ms', 'p99')}"))
    rows.append(("worker CPU ms / event (parents + pool)", g(d, "cpu", "worker_processes_ms_per_event"), g(l, "cpu", "worker_processes_ms_per_event")))
    rows.append(("  of which Celery parent processes", g(d, "cpu", "of_which_celery_parents_ms_per_event"), g(l, "cpu", "of_which_celery_parents_ms_per_event")))
    rows.append(("PostgreSQL backend CPU ms / event", g(d, "cpu", "postgres_backends_ms_per_event"), g(l, "cpu", "postgres_backends_ms_per_event")))
    rows.append(("machine busy %", g(d, "cpu", "machine_busy_pct"), g(l, "cpu", "machine_busy_pct")))
    rows.append(("load average at end", g(d, "load_at_end"), g(l, "load_at_end")))
    rows.append(("checks (exact effects, no dups, chain)", "passed" if d.get("passed") else "FAILED" if d else "-",
                 "passed" if l.get("passed") else "FAILED" if l else "-"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += ["  ".join(c.ljust(width[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    noop = result["phases"].get("noop")
    if noop:
        lines.append(f"\nno-op Celery task (payhook.noop_probe), same workers: {noop['tasks_per_s']}/s "
                     f"({noop['tasks'] - noop['left']} in {noop['seconds']} s, worker CPU {noop['worker_cpu_ms_per_task']} ms/task)"
                     + (f"; fulfilment drain / no-op = {d['fulfilled_per_s'] / noop['tasks_per_s']:.2f}"
                        if d.get("fulfilled_per_s") and noop.get("tasks_per_s") else ""))
    prof = result.get("profile") or {}
    if prof.get("pool_categories"):
        lines.append(f"\nwhere a pool process's wall time goes (py-spy --idle, {prof['samples_pool']} samples, "
                     f"{prof['events_during_profile']} events in {prof['seconds']} s):")
        for name, v in prof["pool_categories"].items():
            lines.append(f"  {v['pct']:5.1f}%  {v['ms_per_event']:6.2f} ms/event  {name}")
    if result.get("one_event_statements"):
        q = result["one_event_statements"]
        lines.append(f"\none checkout event in-process: {q['statements']} SQL statements, {q['in_process_ms']} ms: {q['by_kind']}")
        if q.get("batch_of_20"):
            b = q["batch_of_20"]
            lines.append(f"batch of 20 checkout events (set-based path): {b['statements']} SQL statements = {b['per_event']}/event, "
                         f"{b['in_process_ms_per_event']} ms/event: {b['by_kind']}")
    return "\n".join(lines)


def _dig(d, keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark payhook's fulfilment pipeline: stored Stripe events drained by Celery workers.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-n", "--n", type=int, default=10_000, help="unique events stored per drain phase")
    p.add_argument("--users", type=int, default=None, help="users created (default: N)")
    p.add_argument("--redelivery", type=float, default=0.2, help="fraction of events delivered a second time")
    p.add_argument("--opt-out", type=float, default=0.1, help="fraction of users with access e-mails switched off")
    p.add_argument("--workers", type=int, default=2, help="worker processes (Procfile worker line, each started once)")
    p.add_argument("--concurrency", type=int, default=1, help="CELERY_CONCURRENCY of each worker process (prefork pool size)")
    p.add_argument("--celery-log-level", default="INFO", help="CELERY_LOG_LEVEL (Procfile default INFO logs every task)")
    p.add_argument("--email-backend", default="django.core.mail.backends.locmem.EmailBackend")
    p.add_argument("--rate", type=float, default=100.0, help="live phase: new events posted per second (open loop)")
    p.add_argument("--live-seconds", type=float, default=60.0, help="live phase: how long the poster runs")
    p.add_argument("--live-window-seconds", type=float, default=300.0,
                   help="live phase: rates and latencies are measured over at most this long from the first publish; "
                        "then the bench waits (up to --max-drain-seconds) for the rest before checking")
    p.add_argument("--live-backlog", type=int, default=None, help="live phase: stored backlog drained alongside (default: N)")
    p.add_argument("--web-concurrency", type=int, default=1, help="live phase: gunicorn WEB_CONCURRENCY")
    p.add_argument("--max-drain-seconds", type=float, default=900.0, help="give up waiting for a phase after this")
    p.add_argument("--phases", default="drain,noop,live,queries,profile",
                   help="comma-separated subset of drain,noop,live,queries,profile")
    p.add_argument("--noop-tasks", type=int, default=5000, help="noop phase: no-op Celery tasks drained by the same workers")
    p.add_argument("--profile-events", type=int, default=2000, help="events stored for the profiled drain")
    p.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy recording length (0: no profile)")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--database", default="payhook_pipebench", help="PostgreSQL database, DROPPED and recreated")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--redis-db", type=int, default=8, help="Redis database used as broker, FLUSHED before and after")
    p.add_argument("--keep-database", action="store_true")
    p.add_argument("--scrape-metrics", action="store_true",
                   help="share one PROMETHEUS_MULTIPROC_DIR and print each contract metric's change over every phase, from /metrics")
    p.add_argument("--label", default="")
    p.add_argument("--output", default="", help="results JSON (default bench/results/pipeline-<time>.json)")
    args = p.parse_args(argv)
    args.users = args.users or args.n
    args.live_backlog = args.n if args.live_backlog is None else args.live_backlog
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if "bench" not in args.database or not re.fullmatch(r"[a-z_][a-z0-9_]*", args.database):
        p.error("--database must be a plain name containing 'bench' (it is dropped and recreated)")
    if args.redis_db == 0:
        p.error("--redis-db 0 is refused: it is flushed")
    if not (1 <= args.n <= 200_000) or args.workers < 1 or args.concurrency < 1 or args.rate <= 0:
        p.error("bad -n/--workers/--concurrency/--rate")
    if args.live_seconds > 600 or args.max_drain_seconds > 3600:
        p.error("--live-seconds ≤ 600 and --max-drain-seconds ≤ 3600")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bench = Bench(args)
    log(f"code under test: {ROOT} ({subprocess.run(['git', '-C', str(ROOT), 'log', '-1', '--format=%h'], capture_output=True, text=True).stdout.strip()})")
    try:
        result = bench.run()
    finally:
        bench.cleanup()
    out = Path(args.output) if args.output else bench.results_dir / f"pipeline-{bench.stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print()
    print(table(result))
    print(f"\nresults: {out}")
    return 0 if result["all_checks_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
