"""Audit search at scale: N audit entries appended through the real bulk append, then the support
searches by email measured over HTTP, with the plans of the exact SQL each view runs (issue 12).

Run from the repo root: `.venv/bin/python -m bench.audit_search --entries 10000000` (see --help and
docs/benchmarks.md, "Audit search at 10 M entries").

1. Server: by default a private PostgreSQL in --data-dir (initdb on first use, run as the `postgres`
   account when we are root), started with load settings (fsync, full_page_writes and
   synchronous_commit off, wal_level minimal, big shared_buffers/maintenance_work_mem, no
   autovacuum) for the load ONLY, then restarted with durable settings (DURABLE below) before
   anything is measured. With --pg-host the named server is used as it is (its --database dropped
   and recreated unless --reuse).
2. Load: `migrate`, then stories of buyers (checkout, subscription invoice, refund, failed payment,
   ignored event) become audit entries carrying the subjects the pipeline gives them (email,
   customer, user, payment_intent, subscription, invoice, charge, checkout_session, notification),
   appended with `audit.services.audit_entries_append` (redaction, blind-index hashes, chain) in
   batches of --batch-size, one transaction each. Customers have a long-tailed number of stories
   (Pareto weights: most a few, some thousands of entries). The non-unique indexes of the audit
   tables are dropped during the load and rebuilt after it (PostgreSQL's "Populating a Database"),
   unless --keep-indexes; then VACUUM ANALYZE (what autovacuum would do) so plans and the
   visibility map are those of a settled table.
3. Measure (also with --reuse, on a loaded database): the Procfile `web` line (gunicorn, real HTTP,
   --web-concurrency workers) answers, for --sample existing buyers' emails (+ the 5 heaviest) and
   --absent unknown ones: the audit API search (first page), the admin changelist search (session of
   a `support` staff user) and, where the URLs exist, the customer lookup API and admin page. One
   warm-up pass, then a measured pass; p50/p95/max per kind.
4. Plans: each view is called once in-process (Django test client) for the heaviest buyer, a
   typical one and an absent one, its SQL captured with `connection.execute_wrapper`, and every
   SELECT but the session/user/token look-ups is run again under EXPLAIN (ANALYZE, BUFFERS).

Results: a table on stdout, JSON and the plans under bench/results/ (gitignored). The data
directory keeps meta.json (the run's bench-only keys and parameters) so --reuse can search it.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import platform
import pwd
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.processes import Process, free_port, procfile_web_start  # noqa: E402

VENV_BIN = Path(sys.executable).parent
AUDIT_TABLES = ("audit_auditentry", "audit_auditsubject")
BOOKKEEPING_TABLES = ('"django_session"', '"auth_user"', '"auth_group', '"auth_permission"', '"accounts_apitoken"',
                      '"django_content_type"', '"axes_')

# Settings of the private server while it loads: durability off, memory for index builds.
LOAD_SETTINGS = {
    "fsync": "off", "full_page_writes": "off", "synchronous_commit": "off", "wal_level": "minimal",
    "max_wal_senders": "0", "shared_buffers": "2GB", "maintenance_work_mem": "1GB", "max_wal_size": "16GB",
    "checkpoint_timeout": "1h", "autovacuum": "off", "max_parallel_maintenance_workers": "1",
}
# Settings while measuring: PostgreSQL's defaults (durable) but for a production-sized shared_buffers.
DURABLE_SETTINGS = {
    "fsync": "on", "full_page_writes": "on", "synchronous_commit": "on", "shared_buffers": "1GB",
    "effective_cache_size": "4GB", "autovacuum": "on",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q):
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50": at(0.5), "p95": at(0.95), "max": round(ordered[-1] * 1000, 1)}


# --- The data -----------------------------------------------------------------------------------


def buyer_email(index: int) -> str:
    return f"buyer{index:07d}@example.com"


def buyer_customer(index: int) -> str:
    return f"cus_B{index:07d}"


def buyer_user(index: int) -> str | None:
    """One buyer in five checks out as a guest: no user id."""
    return None if index % 5 == 4 else str(100_000 + index)


def absent_email(index: int) -> str:
    return f"nobody{index:07d}@example.org"


# kind -> (weight, provider event type)
STORY_KINDS = {
    "checkout": (0.50, "checkout.session.completed"),
    "invoice": (0.35, "invoice.paid"),
    "refund": (0.06, "charge.refunded"),
    "failed": (0.07, "invoice.payment_failed"),
    "ignored": (0.02, "customer.updated"),
}


class AuditStories:
    """Deterministic (seeded) audit entries of buyers' stories, as `audit_entries_append` takes them.

    Each story is one provider event as the pipeline records it: `webhook.received`, then its
    effects (entitlements granted or revoked, notifications sent or suppressed, or `event.ignored`),
    every entry carrying the buyer's identifiers as subjects. Buyer `i` is chosen with a Pareto
    weight (alpha 2: median ~1.4, the heaviest of 500,000 buyers ~700 times the median), so a few
    buyers have thousands of entries. `entries_per_customer[i]` counts what buyer `i` got.
    """

    def __init__(self, *, customers: int, seed: int = 12, stream: int = 0):
        self.customers = customers
        weights_rng = random.Random(seed)  # the same buyers' weights in every stream (parallel loaders)
        weights = [weights_rng.paretovariate(2.0) for _ in range(customers)]
        self.cum_weights = list(itertools.accumulate(weights))
        self.rng = random.Random(f"{seed}:{stream}")
        self.stream = stream
        self.entries_per_customer = array("I", bytes(4 * customers))
        self.kinds = list(STORY_KINDS)
        self.kind_cum = list(itertools.accumulate(weight for weight, _ in STORY_KINDS.values()))
        self.stories = 0

    def _customer(self) -> int:
        return min(bisect.bisect(self.cum_weights, self.rng.random() * self.cum_weights[-1]), self.customers - 1)

    def _story(self) -> tuple[int, list[dict]]:
        rng = self.rng
        i = self._customer()
        kind = self.kinds[min(bisect.bisect(self.kind_cum, rng.random() * self.kind_cum[-1]), len(self.kinds) - 1)]
        event_type = STORY_KINDS[kind][1]
        self.stories += 1
        n = self.stories
        event = uuid.UUID(int=rng.getrandbits(128), version=4)
        evt = f"evt_{rng.getrandbits(64):016x}"
        buyer = {"email": buyer_email(i), "customer": buyer_customer(i), "user": buyer_user(i)}
        ids: dict[str, str] = {}
        if kind in ("checkout", "refund"):
            ids["payment_intent"] = f"pi_{rng.getrandbits(64):016x}"
        if kind == "checkout":
            ids["checkout_session"] = f"cs_{rng.getrandbits(64):016x}"
        if kind == "refund":
            ids["charge"] = f"ch_{rng.getrandbits(64):016x}"
        if kind in ("invoice", "failed"):
            ids["invoice"] = f"in_{rng.getrandbits(64):016x}"
            ids["subscription"] = f"sub_B{i:07d}{rng.randrange(3)}"
        subjects = {**buyer, **ids}
        canonical = f"payhook:{kind}:{self.stream}.{n}"
        entries = [{
            "action": "webhook.received", "event_id": event, "subjects": subjects,
            "data": {"endpoint": "stripe", "type": event_type, "provider_event_id": evt,
                     "canonical_types": [] if kind == "ignored" else [f"payhook.{kind}.v1"]},
            "dedup_key": f"webhook.received:{event}",
        }]
        effect = {"payment_intent": ids.get("payment_intent", ""), "canonical_event": canonical}
        if kind == "ignored":
            entries.append({"action": "event.ignored", "event_id": event, "subjects": subjects,
                            "data": {"type": event_type, "reason": "unhandled_type", "mode": "live"},
                            "dedup_key": f"event.ignored:{event}"})
        elif kind in ("checkout", "invoice", "refund"):
            action = "entitlement.revoked" if kind == "refund" else "entitlement.granted"
            keys = ["pro", "reports"] if kind != "invoice" and rng.random() < 0.5 else ["pro"] if kind != "invoice" else ["addon"]
            for key in keys:
                entries.append({"action": action, "event_id": event, "subjects": subjects,
                                "data": {"entitlement_key": key, "source": ids.get("payment_intent") or ids["subscription"],
                                         "reason": "refund" if kind == "refund" else "payment", **effect},
                                "dedup_key": f"{action}:{n}:{canonical}:{key}"})
        if kind != "ignored":
            template = {"checkout": "access_granted", "invoice": "access_granted", "refund": "access_revoked",
                        "failed": "payment_failed"}[kind]
            suppressed = buyer["user"] is not None and rng.random() < 0.1
            action = "notification.suppressed" if suppressed else "notification.sent"
            notification = f"{rng.getrandbits(48)}"
            entries.append({"action": action, "event_id": event,
                            "subjects": {"email": buyer["email"], "user": buyer["user"], "customer": buyer["customer"],
                                         "notification": notification, **ids},
                            "data": {"channel": "email", "template": template, "category": "access",
                                     **({"reason": "opted_out"} if suppressed else {})},
                            "dedup_key": f"notification:{notification}:{event}:email"})
        return i, entries

    def entries(self, count: int):
        """Exactly `count` entries (the last story may be cut short, as a crash mid-batch would not)."""
        made = 0
        while made < count:
            customer, entries = self._story()
            for entry in entries:
                if made == count:
                    return
                self.entries_per_customer[customer] += 1
                yield entry
                made += 1

    def batches(self, count: int, batch_size: int):
        iterator = self.entries(count)
        while batch := list(itertools.islice(iterator, batch_size)):
            yield batch


def audit_log_load(
    *, stories: AuditStories, entries: int, batch_size: int, progress_seconds: float = 10.0, deadline: float | None = None
) -> dict:
    """Append `entries` entries through `audit_entries_append`, one transaction per batch; stops
    early (between batches) once `time.monotonic()` passes `deadline`."""
    from django.db import transaction

    from audit.services import audit_entries_append

    started = last = time.perf_counter()
    done = done_at_last = 0
    for batch in stories.batches(entries, batch_size):
        with transaction.atomic():
            audit_entries_append(entries=batch)
        done += len(batch)
        now = time.perf_counter()
        if deadline is not None and time.monotonic() > deadline:
            log(f"load stopped at its deadline after {done:,} entries")
            break
        if now - last >= progress_seconds or done == entries:
            log(f"loaded {done:,}/{entries:,} entries: {(done - done_at_last) / (now - last):,.0f} rows/s now, "
                f"{done / (now - started):,.0f} rows/s overall")
            last, done_at_last = now, done
    seconds = time.perf_counter() - started
    return {"entries": done, "seconds": round(seconds, 1), "rows_per_second": round(done / max(seconds, 1e-9))}


# --- The server ---------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    from tests.support.provision import postgres_bindir as find

    bindir = find()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql")
    return bindir


class PrivatePostgres:
    """A PostgreSQL server of our own on `data_dir/pgdata`, started and stopped with chosen settings."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.pgdata = data_dir / "pgdata"
        self.log_path = data_dir / "postgres.log"
        self.bindir = postgres_bindir()
        self.user = ("postgres" if _user_exists("postgres") else "nobody") if os.geteuid() == 0 else None
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.settings: dict = {}

    def initdb(self) -> None:
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)
        self._own()
        done = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--no-locale", "--no-instructions"],
            capture_output=True, text=True, user=self.user, cwd=self.data_dir,
        )
        if done.returncode:
            raise SystemExit(f"initdb failed: {done.stderr.strip()[-500:]}")

    def _own(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def start(self, settings: dict) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), 0)
                raise SystemExit(f"a server already runs on {self.pgdata} (postmaster.pid); stop it first")
            except (ProcessLookupError, ValueError):
                pass
        self._own()
        self.port = self.port or free_port()  # the same port across restarts: Django in this process keeps its settings
        options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.pgdata), "-h", "127.0.0.1", "-p", str(self.port), "-k", "",
                 "-c", "max_connections=50", *options],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=self.user,
                cwd=self.data_dir, start_new_session=True,
            )
        self.settings = settings
        deadline = time.monotonic() + 120  # recovery after an unclean stop can take a while
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"postgres exited: {self.log_path.read_text(errors='replace')[-1500:]}")
            if _pg_ready(self.admin_dsn):
                log(f"postgres {self.pgdata} on port {self.port}, pid {self.process.pid}: "
                    + " ".join(f"{k}={v}" for k, v in settings.items()))
                return
            time.sleep(0.2)
        raise SystemExit("postgres did not start in 120 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: a checkpoint, then exit
            try:
                self.process.wait(600)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _pg_ready(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


# --- The benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.data_dir = Path(args.data_dir).resolve()
        self.meta_path = self.data_dir / "meta.json"
        self.private = None if args.pg_host else PrivatePostgres(self.data_dir)
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.results_dir = ROOT / "bench" / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.result: dict = {"benchmark": "payhook audit search", "options": vars(args)}
        self.web: Process | None = None

    # -- connection --
    def database_url(self) -> str:
        if self.private:
            return f"postgres://postgres@127.0.0.1:{self.private.port}/{self.args.database}"
        return f"postgres://{self.args.pg_user}@{self.args.pg_host}:{self.args.pg_port}/{self.args.database}"

    def admin_dsn(self) -> str:
        if self.private:
            return self.private.admin_dsn
        return f"host={self.args.pg_host} port={self.args.pg_port} user={self.args.pg_user} dbname=postgres"

    def sql(self, query: str, params=()):
        import psycopg

        dsn = self.database_url().replace("postgres://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    def env(self, meta: dict) -> dict[str, str]:
        """The process environment of the web process (and of Django in this process)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "SENTRY_", "EMAIL_", "API_", "CACHE_", "WEB_CONCURRENCY",
                                    "BIND", "PORT", "BLIND_INDEX", "AUDIT_", "FIELD_ENCRYPTION"))}
        env.update(
            PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
            PAYHOOK_READ_DOTENV="false",
            PAYHOOK_VAR_DIR=str(self.data_dir / "var"),
            DATABASE_URL=self.database_url(),
            CELERY_BROKER_URL="memory://localhost/",
            CACHE_URL="locmemcache://",
            API_THROTTLE_USER="",  # one client sends hundreds of searches a minute on purpose
            API_THROTTLE_CUSTOMER_LOOKUP="",  # likewise the lookup's own limit
            DJANGO_SECRET_KEY=meta["django_secret_key"],
            FIELD_ENCRYPTION_KEYS=meta["field_encryption_key"],
            BLIND_INDEX_KEY=meta["blind_index_key"],
            AUDIT_CHAIN_KEY=meta["audit_chain_key"],
            DJANGO_LOG_LEVEL="WARNING",
            DJANGO_DEBUG="false",
            SENTRY_DSN="",
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE="config.settings",
            PYTHONPATH=str(ROOT),  # this checkout's code in every process, not the venv's editable one
        )
        return env

    def django_setup(self, meta: dict) -> None:
        os.environ.update(self.env(meta))
        import django

        django.setup()

    # -- load --
    def load(self) -> dict:
        args = self.args
        from cryptography.fernet import Fernet

        meta = {
            "entries": args.entries, "customers": args.customers, "seed": args.seed, "batch_size": args.batch_size,
            # Bench-only keys, kept with the bench's data so --reuse can search and verify it.
            "django_secret_key": secrets.token_urlsafe(50), "field_encryption_key": Fernet.generate_key().decode(),
            "blind_index_key": secrets.token_urlsafe(32), "audit_chain_key": secrets.token_urlsafe(32),
            "complete": False,
        }
        if self.private:
            self.private.initdb()
            self.meta_path.write_text(json.dumps(meta, indent=1))
            self.private.start(LOAD_SETTINGS)
        with _connect(self.admin_dsn()) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.database}"')
        self.meta_path.write_text(json.dumps(meta, indent=1))
        self.django_setup(meta)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        deferred = [] if args.keep_indexes else self.indexes_drop()
        meta["deferred_indexes"] = deferred
        self.meta_path.write_text(json.dumps(meta, indent=1))

        log(f"loading {args.entries:,} entries for {args.customers:,} customers in batches of {args.batch_size:,}, "
            f"{args.loaders} loader process(es)")
        loaded, counts = self.load_entries()
        finish_started = time.perf_counter()
        self.indexes_create(deferred)
        log("VACUUM (ANALYZE) of the audit tables")
        for table in AUDIT_TABLES:
            self.sql(f"VACUUM (ANALYZE) {table}")
        loaded["index_build_and_vacuum_seconds"] = round(time.perf_counter() - finish_started, 1)
        meta.update(complete=True, load=loaded)
        (self.data_dir / "customers.json").write_text(json.dumps(list(counts)))
        self.meta_path.write_text(json.dumps(meta, indent=1))
        log(f"load done: {json.dumps(loaded)}")
        return meta

    def load_entries(self) -> tuple[dict, array]:
        """The appends, by --loaders processes (forked: each its own stream of stories and its own
        connection; the chain head lock makes their batches take turns, so they form one chain)."""
        import multiprocessing

        from django.db import connections

        args = self.args
        deadline = time.monotonic() + args.max_load_seconds if args.max_load_seconds else None
        connections.close_all()
        shares = [args.entries // args.loaders + (1 if w < args.entries % args.loaders else 0) for w in range(args.loaders)]
        started = time.perf_counter()
        context = multiprocessing.get_context("fork")
        loaders = [context.Process(target=_loader_main, args=(w, shares[w], args, deadline, self.data_dir)) for w in range(args.loaders)]
        for loader in loaders:
            loader.start()
        last, last_count = started, 0
        while any(loader.is_alive() for loader in loaders):
            time.sleep(1)
            now = time.perf_counter()
            if now - last >= 15:
                count = self.sql("SELECT COALESCE(SUM(last_seq), 0) FROM audit_auditchainhead")[0][0]
                log(f"chain at {count:,} entries: {(count - last_count) / (now - last):,.0f} rows/s now, "
                    f"{count / (now - started):,.0f} rows/s overall")
                last, last_count = now, count
        for loader in loaders:
            loader.join()
            if loader.exitcode:
                raise SystemExit(f"loader exited with {loader.exitcode}")
        seconds = time.perf_counter() - started
        counts = array("I", bytes(4 * args.customers))
        stories = 0
        for w in range(args.loaders):
            part = self.data_dir / f"loader-{w}.json"
            found = json.loads(part.read_text())
            stories += found["stories"]
            for i, n in enumerate(found["entries_per_customer"]):
                counts[i] += n
            part.unlink()
        total = self.sql("SELECT COALESCE(SUM(last_seq), 0) FROM audit_auditchainhead")[0][0]
        loaded = {"entries": total, "seconds": round(seconds, 1), "rows_per_second": round(total / max(seconds, 1e-9)),
                  "stories": stories, "loaders": args.loaders}
        log(f"appended {total:,} entries in {seconds:,.0f} s ({loaded['rows_per_second']:,} rows/s)")
        return loaded, counts

    def indexes_drop(self) -> list[str]:
        """Drop the audit tables' non-unique indexes; their definitions, to build them again after the load."""
        rows = self.sql(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i JOIN pg_class c ON c.relname = i.indexname "
            "JOIN pg_index x ON x.indexrelid = c.oid WHERE i.tablename = ANY(%s) AND NOT x.indisunique ORDER BY 1",
            (list(AUDIT_TABLES),),
        )
        for name, _ in rows:
            self.sql(f'DROP INDEX "{name}"')
        log(f"deferred indexes (rebuilt after the load): {', '.join(name for name, _ in rows)}")
        return [definition for _, definition in rows]

    def indexes_create(self, definitions: list[str]) -> None:
        for definition in definitions:
            started = time.perf_counter()
            self.sql("SET maintenance_work_mem = '1GB'")
            self.sql(definition)
            log(f"{definition} ({time.perf_counter() - started:.0f} s)")

    def sizes(self) -> dict:
        rows = self.sql(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), c.reltuples::bigint FROM pg_class c "
            "WHERE c.relname = ANY(%s)", (list(AUDIT_TABLES),))
        out = {name: {"total": _mib(total), "heap": _mib(heap), "rows_estimate": tuples} for name, total, heap, tuples in rows}
        for name, size in self.sql(
            "SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname = ANY(%s) ORDER BY 1", (list(AUDIT_TABLES),)):
            out.setdefault("indexes", {})[name] = _mib(size)
        return out

    # -- measure --
    def users(self) -> tuple[str, str]:
        """A support staff member's API token and admin session cookie."""
        from datetime import timedelta

        from django.contrib.auth.models import Group, User
        from django.test import Client

        from accounts.services import api_token_create
        from config.permissions import SUPPORT

        user, _ = User.objects.get_or_create(username="bench-support", defaults={"is_staff": True})
        user.is_staff = True
        user.set_unusable_password()
        user.save()
        user.groups.add(Group.objects.get(name=SUPPORT))
        token = api_token_create(user=user, expires_in=timedelta(days=1)).key
        client = Client()
        client.force_login(user)
        return token, client.cookies["sessionid"].value

    def samples(self, meta: dict) -> tuple[list[str], list[str], list[str]]:
        counts = json.loads((self.data_dir / "customers.json").read_text())
        present = [i for i, n in enumerate(counts) if n]
        heaviest = sorted(present, key=lambda i: counts[i], reverse=True)[:5]
        rng = random.Random(self.args.seed + 1)
        chosen = rng.sample(present, min(self.args.sample, len(present)))
        self.result["sample"] = {
            "buyers_with_entries": len(present), "heaviest_entries": [counts[i] for i in heaviest],
            "sample_entries_median": sorted(counts[i] for i in chosen)[len(chosen) // 2] if chosen else 0,
        }
        return ([buyer_email(i) for i in chosen], [buyer_email(i) for i in heaviest],
                [absent_email(i) for i in range(self.args.absent)])

    def measure(self, meta: dict) -> dict:
        import http.client
        from urllib.parse import urlencode

        token, session = self.users()
        env = self.env(meta)
        self.web, port = procfile_web_start(env, self.data_dir / "web.log", workers=self.args.web_concurrency)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def get(path: str, q: str, headers: dict) -> tuple[int, float]:
            started = time.perf_counter()
            conn.request("GET", f"{path}?{urlencode({'q': q})}", headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status, time.perf_counter() - started

        api = {"Authorization": f"Token {token}", "Accept": "application/json"}
        admin = {"Cookie": f"sessionid={session}"}
        kinds = {
            "api search (/api/v1/audit/?q=)": ("/api/v1/audit/", api),
            "admin search (/admin/audit/auditentry/?q=)": ("/admin/audit/auditentry/", admin),
            "lookup api (/api/v1/customers/lookup/?q=)": ("/api/v1/customers/lookup/", api),
            "lookup admin (/admin/support/lookup/?q=)": ("/admin/support/lookup/", admin),
        }
        present, heaviest, absent = self.samples(meta)
        terms = [("present", q) for q in present] + [("heaviest", q) for q in heaviest] + [("absent", q) for q in absent]
        out: dict = {}
        for name, (path, headers) in kinds.items():
            status, _ = get(path, present[0], headers)
            if status == 404:
                log(f"{name.split(' (')[0]}: not available in this build (404)")
                out[name] = {"available": False}
                continue
            if status != 200:
                log(f"{name}: HTTP {status} for a buyer's email; not measured")
                out[name] = {"available": False, "status": status}
                continue
            for _, q in terms:  # warm-up pass: every page once, so the measured pass reads a warm cache
                get(path, q, headers)
            timings: dict[str, list[float]] = {"present": [], "heaviest": [], "absent": []}
            for group, q in terms:
                status, seconds = get(path, q, headers)
                if status != 200:
                    raise SystemExit(f"{name}: HTTP {status}")
                timings[group].append(seconds)
            everything = [t for values in timings.values() for t in values]
            out[name] = {"available": True, "all": percentiles(everything),
                         **{group: percentiles(values) for group, values in timings.items()}}
            log(f"{name}: {json.dumps(out[name]['all'])}")
        conn.close()
        self.web.stop()
        self.web = None
        return out

    def plans(self, meta: dict) -> dict:
        """EXPLAIN (ANALYZE, BUFFERS) of every audit-table statement each view runs, for three terms."""
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client

        token, _ = self.users()
        client = Client()
        client.force_login(User.objects.get(username="bench-support"))
        present, heaviest, absent = self.samples(meta)
        terms = {"heaviest buyer": heaviest[0], "typical buyer": present[0], "absent email": absent[0]}
        views = {
            "api search": ("/api/v1/audit/", {"HTTP_AUTHORIZATION": f"Token {token}"}),
            "admin search": ("/admin/audit/auditentry/", {}),
            "lookup api": ("/api/v1/customers/lookup/", {"HTTP_AUTHORIZATION": f"Token {token}"}),
            "lookup admin": ("/admin/support/lookup/", {}),
        }
        out: dict = {}
        for view, (path, headers) in views.items():
            for label, q in terms.items():
                captured: list[tuple[str, object]] = []
                with connection.execute_wrapper(_capture_into(captured)):
                    status = client.get(path, {"q": q}, **headers).status_code
                if status == 404:
                    out[view] = "not available in this build"
                    break
                statements = []
                for sql, params in captured:
                    # Every read of the data the page shows (the lookup reads events, entitlements…),
                    # not the session, user and token look-ups every request makes.
                    if not sql.lstrip().upper().startswith("SELECT") or any(t in sql for t in BOOKKEEPING_TABLES):
                        continue
                    with connection.cursor() as cursor:
                        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                        plan = "\n".join(row[0] for row in cursor.fetchall())
                    statements.append({"sql": sql, "plan": plan})
                out.setdefault(view, {})[label] = {"status": status, "statements_total": len(captured), "audit_statements": statements}
        return out

    def machine_info(self) -> dict:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        version = self.sql("SHOW server_version")[0][0]
        return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(int(mem) / 1024 / 1024, 1),
                "python": platform.python_version(), "postgresql": version,
                "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())}

    def run(self) -> dict:
        args = self.args
        commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
        self.result.update(commit=commit, command=" ".join([".venv/bin/python", "-m", "bench.audit_search", *sys.argv[1:]]))
        if args.reuse:
            if not self.meta_path.exists():
                raise SystemExit(f"--reuse: no {self.meta_path}; load first")
            meta = json.loads(self.meta_path.read_text())
            if not meta.get("complete"):
                log("WARNING: the load in this directory did not finish; measuring what is there")
        else:
            meta = self.load()
            if self.private:
                self.private.stop()
        if self.private:
            self.private.start(DURABLE_SETTINGS)
        if args.reuse:
            self.django_setup(meta)
            from django.core.management import call_command

            # The schema of this checkout (a database loaded by an older one lacks its newer columns).
            call_command("migrate", verbosity=0)
        self.result["settings_while_measuring"] = self.private.settings if self.private else "the named server's own"
        self.result["load"] = meta.get("load")
        self.result["machine"] = self.machine_info()
        self.result["entries_in_database"] = self.sql("SELECT COALESCE(SUM(last_seq), 0) FROM audit_auditchainhead")[0][0]
        self.result["sizes"] = self.sizes()
        log(f"{self.result['entries_in_database']:,} entries; sizes {json.dumps(self.result['sizes'])}")
        if args.verify:
            from django.core.management import call_command

            started = time.perf_counter()
            call_command("verify_audit_chain")
            self.result["verify_seconds"] = round(time.perf_counter() - started, 1)
        if args.measure:
            self.result["latency_ms"] = self.measure(meta)
            self.result["plans"] = self.plans(meta)
        return self.result

    def cleanup(self) -> None:
        if self.web is not None:
            self.web.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        if self.private:
            self.private.stop()


def _loader_main(stream: int, entries: int, args, deadline: float | None, data_dir: Path) -> None:
    """One loader process (forked after django.setup(), with no connection open)."""
    stories = AuditStories(customers=args.customers, seed=args.seed, stream=stream)
    done = audit_log_load(stories=stories, entries=entries, batch_size=args.batch_size, progress_seconds=120, deadline=deadline)
    from django.db import connections

    connections.close_all()
    (data_dir / f"loader-{stream}.json").write_text(
        json.dumps({"stories": stories.stories, "entries": done["entries"], "entries_per_customer": list(stories.entries_per_customer)})
    )


def _capture_into(captured: list):
    """An execute wrapper that records each statement and its parameters, then runs it."""

    def wrapper(execute, sql, params, many, context):
        captured.append((sql, params))
        return execute(sql, params, many, context)

    return wrapper


def _connect(dsn: str):
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.0f} MiB"


def plans_text(plans: dict) -> str:
    lines = []
    for view, by_term in plans.items():
        if isinstance(by_term, str):
            lines.append(f"== {view}: {by_term}")
            continue
        for label, found in by_term.items():
            lines.append(f"== {view}, {label}: HTTP {found['status']}, {found['statements_total']} statements in all")
            for statement in found["audit_statements"]:
                lines += ["-- " + statement["sql"], statement["plan"], ""]
    return "\n".join(lines)


def table(result: dict) -> str:
    lines = [f"{'kind':48} {'terms':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}   heaviest p95 / absent p95"]
    for name, found in result.get("latency_ms", {}).items():
        if not found.get("available"):
            lines.append(f"{name:48} " + (f"HTTP {found['status']}" if "status" in found else "not available in this build"))
            continue
        a = found["all"]
        lines.append(f"{name:48} {a['n']:>6} {a['p50']:>8} {a['p95']:>8} {a['max']:>8}   "
                     f"{found['heaviest'].get('p95')} / {found['absent'].get('p95')}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark the audit log's support searches at scale.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--entries", type=int, default=10_000_000, help="audit entries to append")
    p.add_argument("--customers", type=int, default=None, help="buyers (default: entries / 20)")
    p.add_argument("--batch-size", type=int, default=10_000, help="entries per audit_entries_append call and transaction")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--reuse", action="store_true", help="measure the database already loaded in --data-dir (or --database)")
    p.add_argument("--loaders", type=int, default=2, help="loader processes (their batches take turns on the chain lock)")
    p.add_argument("--max-load-seconds", type=float, default=0, help="stop appending after this long (0: no limit)")
    p.add_argument("--keep-indexes", action="store_true", help="load with every index in place (slower)")
    p.add_argument("--verify", action="store_true", help="run verify_audit_chain over everything (minutes at 10 M)")
    p.add_argument("--no-measure", dest="measure", action="store_false", help="load only")
    p.add_argument("--sample", type=int, default=200, help="existing buyers searched")
    p.add_argument("--absent", type=int, default=50, help="unknown emails searched")
    p.add_argument("--web-concurrency", type=int, default=2, help="gunicorn workers (Procfile web line)")
    p.add_argument("--data-dir", default=str(ROOT / "var" / "bench" / "audit-search"),
                   help="the private server's directory (pgdata, logs, meta.json)")
    p.add_argument("--database", default="payhook_auditbench", help="database name (DROPPED and recreated unless --reuse)")
    p.add_argument("--pg-host", default="", help="use this PostgreSQL server instead of a private one")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--output", default="", help="results JSON (default bench/results/audit-search-<time>.json)")
    args = p.parse_args(argv)
    if args.customers is None:
        args.customers = max(10, args.entries // 20)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        result = bench.run()
    finally:
        bench.cleanup()
    output = Path(args.output) if args.output else bench.results_dir / f"audit-search-{bench.stamp}.json"
    output.write_text(json.dumps(result, indent=1, default=str))
    if "plans" in result:
        plans = output.with_suffix(".plans.txt")
        plans.write_text(plans_text(result["plans"]))
        print(plans_text(result["plans"]))
        log(f"plans: {plans}")
    print(table(result))
    log(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
