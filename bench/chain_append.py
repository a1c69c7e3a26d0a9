#!/usr/bin/env python
"""Audit chain append ceiling: P concurrent appenders, each committing batches of audit entries.

Run from a checkout's root: `/work/main/.venv/bin/python bench/chain_append.py` (see --help).

1. Set-up: drops and recreates its own PostgreSQL database (payhook_chainbench) and migrates it with
   the code of `--tree` (default: the checkout this script is in), so the same script measures
   another checkout (e.g. main, "before") with `--tree /path/to/that/checkout`.
2. For each P in --appenders: P worker processes (`--worker`, Django set up from --tree) start
   together; each loops for --seconds: open a transaction, append --entries entries the way event
   processing does (one `audit_entries_append` call: webhook.received, entitlement.granted ×2,
   notification.sent ×2, each with a dedup key and customer/email subjects), commit. Reports
   appends/s, commits/s and p50/p99 of the transaction's latency (append + commit), per P.
3. After the last P: `manage.py verify_audit_chain` must pass and count every entry written.

synchronous_commit is left as the server has it (on, as in production) and printed. Results: a table
on stdout and JSON under bench/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _env(args) -> dict:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(Path(args.tree).resolve()),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PAYHOOK_READ_DOTENV": "false",
        "DATABASE_URL": f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}",
        "DJANGO_SECRET_KEY": "chain-bench-secret-key-not-for-production",
        "AUDIT_CHAIN_KEY": "chain-bench-audit-key",
        "BLIND_INDEX_KEY": "chain-bench-blind-index-key",
        "FIELD_ENCRYPTION_KEYS": "Y2hhaW4tYmVuY2gtZmllbGQta2V5LTMyYnl0ZXMhISE=",
        "LOG_FORMAT": "console",
        "DJANGO_LOG_LEVEL": "WARNING",
    })
    return env


def worker(args) -> None:
    """One appender process: loop until --until (a wall-clock time), print its latencies as JSON."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import django

    django.setup()
    from django.db import connection, transaction

    from audit.services import audit_entries_append

    connection.ensure_connection()
    latencies: list[float] = []
    entries = 0
    n = 0
    # Ready: the parent starts the clock once every appender has set up (a loaded machine takes seconds).
    print("ready", flush=True)
    start_at, until = (float(x) for x in sys.stdin.readline().split())
    while time.time() < start_at:
        time.sleep(0.005)
    while time.time() < until:
        n += 1
        event_id = str(uuid.uuid4())
        customer = f"cus_{args.worker}_{n}"
        subjects = {"customer": customer, "email": f"buyer{args.worker}.{n}@example.com"}
        batch = [
            {"action": "webhook.received", "event_id": event_id, "subjects": subjects,
             "dedup_key": f"received:{event_id}", "data": {"provider": "stripe"}},
            {"action": "entitlement.granted", "event_id": event_id, "subjects": subjects,
             "dedup_key": f"granted:{event_id}:pro", "data": {"entitlement_key": "pro"}},
            {"action": "entitlement.granted", "event_id": event_id, "subjects": subjects,
             "dedup_key": f"granted:{event_id}:reports", "data": {"entitlement_key": "reports"}},
            {"action": "notification.sent", "event_id": event_id, "subjects": subjects,
             "dedup_key": f"sent:{event_id}:email", "data": {"channel": "email"}},
            {"action": "notification.sent", "event_id": event_id, "subjects": subjects,
             "dedup_key": f"sent:{event_id}:in_app", "data": {"channel": "in_app"}},
        ][: args.entries]
        began = time.perf_counter()
        with transaction.atomic():
            written = audit_entries_append(entries=batch)
        latencies.append(time.perf_counter() - began)
        entries += len(written)
    print(json.dumps({"commits": len(latencies), "entries": entries, "latencies": latencies}))


def _waits_sample(store, procs) -> dict[str, float]:
    """While the appenders run: what their PostgreSQL backends are doing, sampled every 50 ms.

    `Lock` is waiting for another transaction (the chain head); `IO:WALSync`/`IPC:*` is the commit's
    flush; `running` is executing (CPU, or waiting for the client: ClientRead counts as idle here).
    """
    counts: dict[str, int] = {}
    with store.psycopg.connect(store.dsn, autocommit=True) as conn:
        while any(proc.poll() is None for proc in procs):
            rows = conn.execute(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
            for state, wait_type, wait_event in rows:
                if wait_type == "Lock":
                    key = f"Lock:{wait_event}"
                elif wait_type in ("IO", "IPC", "LWLock"):
                    key = f"{wait_type}:{wait_event}"
                elif state == "active":
                    key = "running"
                else:
                    key = "client (idle in transaction / between statements)"
                counts[key] = counts.get(key, 0) + 1
            time.sleep(0.05)
    total = sum(counts.values()) or 1
    return {key: n / total for key, n in sorted(counts.items(), key=lambda item: -item[1])}


def _manage(args, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *command], cwd=args.tree, env=_env(args),
                          capture_output=True, text=True)


def main(args) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.store import Store

    store = Store(args)
    store.recreate()
    try:
        migrated = _manage(args, "migrate", "--noinput")
        if migrated.returncode:
            raise SystemExit(f"migrate failed:\n{migrated.stderr[-3000:]}")
        sync_commit = store.scalar("SHOW synchronous_commit")
        git = subprocess.run(["git", "-C", args.tree, "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
        print(f"tree {args.tree} ({git[:80]}), synchronous_commit={sync_commit}, {args.entries} entries/commit, {args.seconds}s per P")
        rows = []
        for p in args.appenders:
            procs = [
                subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(i), "--tree", args.tree,
                                  "--entries", str(args.entries)],
                                 cwd=args.tree, env=_env(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for i in range(p)
            ]
            for proc in procs:
                if proc.stdout.readline().strip() != "ready":
                    raise SystemExit(f"appender failed to start:\n{proc.stderr.read()[-3000:]}")
            start_at = time.time() + 0.2
            load_before = os.getloadavg()
            for proc in procs:
                proc.stdin.write(f"{start_at} {start_at + args.seconds}\n")
                proc.stdin.flush()
            waits = _waits_sample(store, procs)
            outputs = [proc.communicate() for proc in procs]
            load_after = os.getloadavg()
            results = []
            for proc, (out, err) in zip(procs, outputs):
                if proc.returncode:
                    raise SystemExit(f"appender failed:\n{err[-3000:]}")
                results.append(json.loads(out.strip().splitlines()[-1]))
            latencies = [x for r in results for x in r["latencies"]]
            commits = sum(r["commits"] for r in results)
            entries = sum(r["entries"] for r in results)
            row = {
                "appenders": p, "commits": commits, "entries": entries,
                "commits_per_s": commits / args.seconds, "appends_per_s": entries / args.seconds,
                "p50_ms": _percentile(latencies, 0.50) * 1000, "p99_ms": _percentile(latencies, 0.99) * 1000,
                "loadavg_before": load_before, "loadavg_after": load_after, "backend_states": waits,
            }
            rows.append(row)
            print(f"P={p}: {row['appends_per_s']:8.1f} appends/s {row['commits_per_s']:7.1f} commits/s "
                  f"p50 {row['p50_ms']:6.2f} ms p99 {row['p99_ms']:6.2f} ms  load {load_after[0]:.2f}", flush=True)
            print("      appender backends, share of samples: " + ", ".join(f"{k} {v:.0%}" for k, v in waits.items()), flush=True)
        verified = _manage(args, "verify_audit_chain")
        total = sum(row["entries"] for row in rows)
        last = (verified.stdout.strip().splitlines() or [""])[-1]
        ok = verified.returncode == 0 and last.startswith(f"OK {total} entries")
        print(f"verify_audit_chain: {'passed' if ok else 'FAILED'}: {last or verified.stderr.strip()[-500:]}")
        result = {
            "tree": args.tree, "git": git, "synchronous_commit": sync_commit, "entries_per_commit": args.entries,
            "seconds": args.seconds, "rows": rows, "verified": ok, "verify_output": last,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "pg": store.version()},
            "options": {k: v for k, v in vars(args).items()},
        }
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"chain_append-{args.label}-{time.strftime('%Y%m%dT%H%M%S')}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"results: {path}")
        if not ok:
            raise SystemExit(1)
    finally:
        if not args.keep:
            store.drop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", default=str(ROOT), help="Checkout whose code is measured (default: this one).")
    parser.add_argument("--label", default="run", help="Name in the results file (e.g. before, after).")
    parser.add_argument("--appenders", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8],
                        help="Comma-separated numbers of concurrent appender processes (default 1,2,4,8).")
    parser.add_argument("--seconds", type=float, default=15.0, help="Measured seconds per P (default 15).")
    parser.add_argument("--entries", type=int, default=5, choices=range(1, 6), help="Entries per transaction (default 5).")
    parser.add_argument("--database", default="payhook_chainbench")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    parsed = _parser().parse_args()
    if parsed.worker is not None:
        worker(parsed)
    else:
        main(parsed)
