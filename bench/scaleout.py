#!/usr/bin/env python
"""Scale-out benchmark: N web processes and M worker "hosts" against one PostgreSQL and one Redis,
and (--rss) web and worker memory over 100,000 events.

Run from the repo root: `.venv/bin/python bench/scaleout.py` (see --help; figures in docs/scaling.md).

Scale-out (default mode): sets up its own database (payhook_scalebench, DROPPED and recreated) and
Redis db (12, FLUSHED) with bench/pipeline.py's set-up (endpoint, catalog, users), starts the Procfile
`web` line once (gunicorn, WEB_CONCURRENCY=--web-concurrency), then for each M in --hosts starts M
Procfile `worker` lines (each `--hostname hostK@%h`, CELERY_CONCURRENCY=1, its own outbox relay thread)
and posts pipeline.py's realistic signed Stripe events over HTTP, open loop, at --rate/s for --seconds
(+20 % redeliveries). While it posts, a sampler reads every --sample-seconds: events finished,
CPU of each process class from /proc (web tree, worker trees, this database's PostgreSQL backends,
PostgreSQL's background processes, redis-server), `pg_stat_database.xact_commit`, WAL position,
`pg_stat_activity` wait events of this database, and the relay's claim query (EXPLAIN ANALYZE of
its SELECT without the row locks). Then the posting stops, the M workers drain what is left
(the drain rate without web load is reported too), pipeline.py's checks run on the step's events
(exact effects, no duplicates by any unique key, no dead letters, `verify_audit_chain`), and the
workers stop. Redis `INFO commandstats` and WAL are server-wide: other users of the shared servers
show up in them (the load average is in the results).

Memory (--rss): the same set-up, the web and 2 workers, and --events new events posted over HTTP in
chunks of --sample-every (the next chunk waits until the backlog is below one chunk, so events flow
at about the fulfilment rate); every --sample-every fulfilled events, RSS and PSS (smaps_rollup)
of the gunicorn master and its workers and of the Celery parents and their pool processes. The slope
(MB per 10k events) is a least-squares line over the samples after --warmup-events. To rerun after a
merge: `.venv/bin/python bench/scaleout.py --rss --events 100000` from the merged checkout.

Results: tables on stdout and JSON under bench/results/ (gitignored); the JSON is rewritten after
every step/sample, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import pipeline  # noqa: E402
from bench.pipeline import loadavg, log, open_loop, percentiles  # noqa: E402
from bench.procstat import (  # noqa: E402
    machine_busy,
    proc_cpu_seconds,
    proc_descendants,
    proc_memory_kib,
)
from tests.support.processes import Process, procfile_commands  # noqa: E402

DONE = ("processed", "ignored", "dead")
PG_BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical replication", "stats")


# --- Pure parts (tests/bench/test_scaleout_bench.py) ---------------------------------------------------


def slope_per_10k(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (events, MB) points, in MB per 10,000 events; None under 2 distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 10_000


def rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def render_table(header: list[str], rows: list[list]) -> str:
    """A plain Markdown table (pastes into docs/scaling.md as is); None shows as '-'."""
    cells = [[str(h) for h in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(width[i]) for i, c in enumerate(r)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in width) + "|"] + [line(r) for r in cells[1:]])


def waits_summary(samples: list[dict]) -> dict:
    """Wait events of this database's active sessions, summed over samples, as % of the active
    session samples (what the sessions were doing while active), most frequent first."""
    total = collections.Counter()
    for sample in samples:
        total.update(sample)
    active = sum(total.values())
    return {name: round(100 * n / active, 1) for name, n in total.most_common(8)} if active else {}


def memory_rows(samples: list[dict]) -> list[list]:
    return [[s["fulfilled"], s["received"], s["web_rss_mb"], s["web_pss_mb"], s["worker_rss_mb"], s["worker_pss_mb"],
             s["web_workers_rss_mb"], s["worker_pools_rss_mb"], s["load"]] for s in samples]


MEMORY_HEADER = ["fulfilled", "received", "web RSS MB", "web PSS MB", "worker RSS MB", "worker PSS MB",
                 "of which gunicorn workers RSS", "of which Celery pools RSS", "load"]


def memory_slopes(samples: list[dict], warmup: int) -> dict:
    after = [s for s in samples if s["fulfilled"] >= warmup]
    out = {}
    for key in ("web_rss_mb", "web_pss_mb", "worker_rss_mb", "worker_pss_mb", "web_workers_rss_mb", "worker_pools_rss_mb"):
        slope = slope_per_10k([(s["fulfilled"], s[key]) for s in after])
        out[key] = None if slope is None else round(slope, 2)
    return out


# --- The benchmark ---------------------------------------------------------------------------------


class ScaleBench(pipeline.Bench):
    """bench/pipeline.py's set-up, events, processes and checks; M worker hosts, HTTP load, samplers."""

    def __init__(self, args):
        super().__init__(args)
        self.result = {"steps": [], "memory": {}}
        self.web = None
        self.port = None
        self.redis_pid = int(self.broker.client.info("server")["process_id"])
        self.claim_sql = None
        self._pg_seen, self._pg_base = {}, set()
        # Transactions this harness commits in the benchmark's database (event counts, claim-query
        # timing): subtracted from pg_stat_database's commits, which count every transaction.
        self.own_xacts = 0

    # -- processes --
    def workers_start(self) -> list[Process]:
        line = procfile_commands()["worker"]
        for k in range(1, self.args.workers + 1):
            # One Celery node per "host": its own name, consumer, and outbox relay thread (worker line).
            self.workers.append(Process.shell(f"{line} --hostname host{k}@%h", self.env,
                                              self.results_dir / f"scaleout-{self.stamp}-host{k}.log", name=f"host{k}"))
        for proc in self.workers:
            proc.worker_ready_wait(timeout=120)
        return self.workers

    def web_ensure(self) -> None:
        if self.web is None:
            self.web, self.port = self.web_start()

    # -- samplers --
    def pg_background_pids(self) -> list[int]:
        """PostgreSQL's auxiliary processes (WAL writer, checkpointer, …): children of the postmaster,
        the parent of one of this database's backends. Server-wide."""
        pids = self.store.backend_pids()
        if not pids:
            return []
        try:
            postmaster = int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return []
        out = []
        for pid in pipeline.proc_children(postmaster):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if any(name in cmd for name in PG_BACKGROUND):
                out.append(pid)
        return out

    def claim_query_sql(self) -> tuple[str, list]:
        """The relay's claim SELECT as Django builds it (webhooks/relay.py), without FOR UPDATE SKIP
        LOCKED so that timing it takes no row lock from the relays."""
        from django.conf import settings

        from webhooks.models import WebhookEvent

        qs = (WebhookEvent.objects.filter(status=WebhookEvent.Status.RECEIVED, dispatched_at__isnull=True)
              .order_by("received_at").values_list("id", "traceparent")[: settings.WEBHOOK_RELAY_BATCH_LIMIT])
        sql, params = qs.query.sql_with_params()
        return sql, list(params)

    def status_counts(self, phase_ids: list[str]) -> dict:
        self.own_xacts += 1
        return super().status_counts(phase_ids)

    def counters(self, conn) -> dict:
        """Cumulative counters; `conn` is on the `postgres` database, so that reading the server-wide
        statistics views commits nothing in the benchmark's database."""
        commits, rollbacks = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (self.args.database,)).fetchone()
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0]
        with self.psycopg.connect(self.store.dsn, autocommit=True) as own:
            done = own.execute("SELECT count(*) FROM webhooks_webhookevent WHERE status = ANY(%s)", (list(DONE),)).fetchone()[0]
            received = own.execute("SELECT count(*) FROM webhooks_webhookevent").fetchone()[0]
        self.own_xacts += 2
        stats = self.broker.client.info("commandstats")
        return {"t": time.time(), "commits": commits - self.own_xacts, "rollbacks": rollbacks, "wal": float(wal), "done": done, "received": received,
                "redis_calls": {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()},
                "machine": machine_busy()}

    def cpu_snapshot(self) -> dict:
        web = {pid: proc_cpu_seconds(pid) for pid in proc_descendants(self.web.pid)} if self.web else {}
        workers = {pid: proc_cpu_seconds(pid) for w in self.workers for pid in proc_descendants(w.pid)}
        parents = {w.pid for w in self.workers}
        bg = {pid: proc_cpu_seconds(pid) for pid in self.pg_background_pids()}
        return {"web": web, "worker": workers, "worker_parents": {p: workers.get(p, 0.0) for p in parents},
                "pg_background": bg, "redis": {self.redis_pid: proc_cpu_seconds(self.redis_pid)}}

    def costs_probe(self, seconds: float) -> dict:
        """Per event costs over `seconds` of the running load, counted for this benchmark only (the
        servers are shared): Redis commands on this db (MONITOR, which names the db of every command),
        WAL bytes of records touching this database's relations or written by their transactions
        (pg_walinspect), and commits in this database."""
        import redis

        calls = collections.Counter()
        client = redis.Redis(host=self.args.redis_host, port=self.args.redis_port, db=self.args.redis_db, socket_timeout=1)
        with self.psycopg.connect(self.store.dsn, autocommit=True) as conn, \
                self.psycopg.connect(self.store.admin_dsn, autocommit=True) as admin:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
                oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
            except self.psycopg.Error:
                oid = None
            stat = "SELECT xact_commit FROM pg_stat_database WHERE datname = %s"
            lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            commits0 = admin.execute(stat, (self.args.database,)).fetchone()[0]
            done0 = conn.execute("SELECT count(*) FROM webhooks_webhookevent WHERE status = ANY(%s)", (list(DONE),)).fetchone()[0]
            own0 = self.own_xacts
            t0 = time.monotonic()
            try:
                with client.monitor() as monitor:
                    while time.monotonic() - t0 < seconds:
                        try:
                            command = monitor.next_command()
                        except (redis.TimeoutError, redis.ConnectionError):
                            continue
                        if int(command.get("db", -1)) == self.args.redis_db:
                            calls[command["command"].split(" ", 1)[0].upper()] += 1
            except redis.RedisError as exc:
                calls["monitor failed: " + type(exc).__name__] += 1
            elapsed = time.monotonic() - t0
            done1 = conn.execute("SELECT count(*) FROM webhooks_webhookevent WHERE status = ANY(%s)", (list(DONE),)).fetchone()[0]
            lsn1 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            self.own_xacts += 7
            time.sleep(1.5)  # pg_stat_database is flushed by the backends about once a second
            commits1 = admin.execute(stat, (self.args.database,)).fetchone()[0] - (self.own_xacts - own0)
            wal = None
            if oid is not None:
                wal = conn.execute(
                    "WITH r AS (SELECT xid, record_length, block_ref FROM pg_get_wal_records_info(%s, %s)), "
                    "mine AS (SELECT DISTINCT xid FROM r WHERE block_ref LIKE %s AND xid <> 0) "
                    "SELECT coalesce(sum(record_length), 0) FROM r WHERE block_ref LIKE %s OR xid IN (SELECT xid FROM mine)",
                    (lsn0, lsn1, f"%/{oid}/%", f"%/{oid}/%")).fetchone()[0]
                self.own_xacts += 1
        events = max(done1 - done0, 1)
        return {"seconds": round(elapsed, 1), "events": done1 - done0,
                "redis_calls_per_event": {k: round(v / events, 3) for k, v in calls.most_common(12)},
                "redis_calls_per_event_total": round(sum(calls.values()) / events, 2),
                "wal_bytes_per_event": None if wal is None else round(float(wal) / events),
                "pg_commits_per_event": round((commits1 - commits0) / events, 2)}

    def hosts_cpu(self) -> dict[str, float]:
        """CPU seconds of each worker host (Celery parent + pool)."""
        return {w.name: sum(proc_cpu_seconds(p) for p in proc_descendants(w.pid)) for w in self.workers}

    def sample_loop(self, stop: threading.Event, out: dict) -> None:
        """Every --sample-seconds: PG backend CPU (pids come and go), wait events, the claim query."""
        waits, claim_ms, lock_tables = [], [], collections.Counter()
        with self.psycopg.connect(self.store.dsn, autocommit=True) as conn, \
                self.psycopg.connect(self.store.admin_dsn, autocommit=True) as admin:
            while not stop.wait(self.args.sample_seconds):
                self.pg_sample()
                rows = admin.execute(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait event)'), wait_event_type, query "
                    "FROM pg_stat_activity WHERE datname = %s AND state = 'active' AND backend_type = 'client backend'",
                    (self.args.database,)).fetchall()
                waits.append(collections.Counter(r[0] for r in rows))
                # Which table a lock waiter's statement names (the first quoted table in it).
                for _, kind, query in rows:
                    if kind == "Lock":
                        table = re.search(r'(?:FROM|UPDATE|INTO)\s+"(\w+)"', query or "")
                        lock_tables[table.group(1) if table else "?"] += 1
                plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + self.claim_sql[0], self.claim_sql[1]).fetchone()[0]
                self.own_xacts += 1
                claim_ms.append(plan[0]["Execution Time"] / 1000)
                out["active_sessions"] = out.get("active_sessions", 0) + sum(waits[-1].values())
        out["waits"] = waits
        out["lock_wait_tables"] = dict(lock_tables.most_common())
        out["claim"] = claim_ms

    # -- one scale-out step --
    def run_step(self, hosts: int) -> dict:
        args = self.args
        self.args.workers = hosts
        phase = f"m{hosts}"
        self.web_ensure()
        schedule = self.live_schedule(phase)
        ids = [pid for pid, e in self.expected.items() if e["phase"] == phase + "-live"]
        log(f"{phase}: starting {hosts} worker host(s) (concurrency {args.concurrency}); web {args.web_concurrency} gunicorn "
            f"worker(s); posting {len(ids)} new events (+{len(schedule) - len(ids)} redeliveries) at {args.rate}/s; load {loadavg()}")
        self.workers_start()
        self._pg_seen, self._pg_base = {}, set()
        self.pg_sample()
        self._pg_base = set(self._pg_seen)
        stop, sampled, posted = threading.Event(), {}, []
        sampler = threading.Thread(target=self.sample_loop, args=(stop, sampled), daemon=True)
        probe: dict = {}

        def probing():
            time.sleep(args.seconds / 3)
            try:
                probe.update(self.costs_probe(min(args.probe_seconds, args.seconds / 2)))
            except Exception as exc:  # a probe must not end the step; the result says why it is missing
                probe["error"] = f"{type(exc).__name__}: {exc}"

        prober = threading.Thread(target=probing, daemon=True)
        with self.psycopg.connect(self.store.admin_dsn, autocommit=True) as conn:
            c0, cpu0 = self.counters(conn), self.cpu_snapshot()
            host0 = self.hosts_cpu()
            sampler.start()
            prober.start()
            try:
                posted = asyncio.run(open_loop(schedule, port=self.port, secret=self.secret, timeout=30, stop=threading.Event()))
                c1, cpu1 = self.counters(conn), self.cpu_snapshot()
                host1 = self.hosts_cpu()
                pg1 = self.pg_cpu_total()
                stop.set()
                sampler.join(60)
                prober.join(60)
                t_drain = time.time()
                self.wait_done(ids, timeout=args.max_drain_seconds)
                c2, cpu2, host2 = self.counters(conn), self.cpu_snapshot(), self.hosts_cpu()
                pg2 = self.pg_cpu_total()
            finally:
                stop.set()
                self.workers_stop()
        window = c1["t"] - c0["t"]
        finished = c1["done"] - c0["done"]
        cpu = {}
        for cls in ("web", "worker", "worker_parents", "pg_background", "redis"):
            cpu[cls] = sum(cpu1[cls].get(pid, 0.0) - cpu0[cls].get(pid, 0.0) for pid in cpu1[cls])
        cpu["pg_backends"] = pg1
        machine = (c1["machine"][1] - c0["machine"][1]) / (c1["machine"][0] - c0["machine"][0])
        # Over the whole step (posting, then the drain): per event costs with start-up/tail included.
        step_events = max(c2["done"] - c0["done"], 1)
        step_cpu = {"worker": sum(host2[n] - host0[n] for n in host0), "pg_backends": pg2,
                    "pg_background": sum(cpu2["pg_background"].get(p, 0.0) - cpu0["pg_background"].get(p, 0.0) for p in cpu2["pg_background"]),
                    "redis": cpu2["redis"][self.redis_pid] - cpu0["redis"][self.redis_pid]}
        redis_step = {k: c2["redis_calls"].get(k, 0) - c0["redis_calls"].get(k, 0) for k in c2["redis_calls"]}
        whole_step = {
            "events": step_events, "seconds": round(c2["t"] - c0["t"], 1),
            "cpu_ms_per_event": {k: round(1000 * v / step_events, 2) for k, v in step_cpu.items()},
            "pg_commits_per_event": round((c2["commits"] - c0["commits"]) / step_events, 2),
            "wal_bytes_per_event_serverwide": round((c2["wal"] - c0["wal"]) / step_events),
            "redis_calls_per_event_serverwide": {k: round(v / step_events, 2) for k, v in sorted(redis_step.items(), key=lambda kv: -kv[1])[:10] if v},
        }
        per_host = {name: round(100 * (host1[name] - host0[name]) / window, 1) for name in host0}
        outcomes = collections.Counter(f"{o['expected']}→{o['code']} {o['status']}" for o in posted)
        accepted = outcomes.get("new→200 accepted", 0)
        redis_ops = {k: c1["redis_calls"].get(k, 0) - c0["redis_calls"].get(k, 0) for k in c1["redis_calls"]}
        redis_ops = {k: v for k, v in sorted(redis_ops.items(), key=lambda kv: -kv[1]) if v}
        out = {
            "hosts": hosts, "web_concurrency": args.web_concurrency, "offered_new_per_s": args.rate, "window_s": round(window, 1),
            "accepted_per_s": rate(accepted, window), "http_requests_per_s": rate(len(posted), window),
            "http": {"outcomes": dict(outcomes), "latency_ms": percentiles([o["latency"] for o in posted])},
            "fulfilled_per_s_while_posting": rate(finished, window),
            "drain_after_posting": {"events": c2["done"] - c1["done"], "seconds": round(c2["t"] - t_drain, 1),
                                    "per_s": rate(c2["done"] - c1["done"], c2["t"] - t_drain)},
            "backlog_at_end_of_posting": c1["received"] - c1["done"],
            "cpu_pct_of_one_core": {k: round(100 * v / window, 1) for k, v in cpu.items()},
            "cpu_ms_per_fulfilled_event": {k: round(1000 * v / max(finished, 1), 2) for k, v in cpu.items()},
            "web_cpu_ms_per_request": round(1000 * cpu["web"] / max(len(posted), 1), 2),
            "machine_busy_pct": round(100 * machine, 1),
            "pg_commits_per_s": rate(c1["commits"] - c0["commits"], window),
            "pg_commits_per_fulfilled_event": round((c1["commits"] - c0["commits"]) / max(finished, 1), 2),
            "pg_rollbacks_per_s": rate(c1["rollbacks"] - c0["rollbacks"], window),
            "wal_bytes_per_fulfilled_event_serverwide": round((c1["wal"] - c0["wal"]) / max(finished, 1)),
            "redis_calls_per_fulfilled_event_serverwide": {k: round(v / max(finished, 1), 2) for k, v in list(redis_ops.items())[:10]},
            "redis_calls_per_s_serverwide": rate(sum(redis_ops.values()), window),
            "pg_wait_events_pct_of_active": waits_summary(sampled.get("waits", [])),
            "pg_lock_waits_by_table": sampled.get("lock_wait_tables", {}),
            "pg_active_sessions_mean": round(sampled.get("active_sessions", 0) / max(len(sampled.get("waits", [])), 1), 2),
            "relay_claim_query_ms": percentiles(sampled.get("claim", [])),
            "worker_host_cpu_pct": per_host,
            "whole_step": whole_step,
            "costs_probe_this_db_only": probe,
            "load": loadavg(),
        }
        out["checks"] = self.verify(ids)
        out["passed"] = out["checks"]["passed"] and outcomes.keys() <= {"new→200 accepted", "again→200 duplicate"}
        log(f"{phase}: {json.dumps({k: v for k, v in out.items() if k != 'checks'})}")
        return out

    def run_scaleout(self) -> None:
        for hosts in self.args.hosts:
            self.result["steps"].append(self.run_step(hosts))
            self.save()
            print("\n" + scaleout_table(self.result["steps"]) + "\n", flush=True)

    # -- memory over many events --
    def memory_sample(self) -> dict:
        web = proc_descendants(self.web.pid)
        gworkers = [p for p in web if p != self.web.pid]
        mem = {pid: proc_memory_kib(pid) for pid in web}
        out = {"web_rss_mb": sum(m["rss"] for m in mem.values()), "web_pss_mb": sum(m["pss"] for m in mem.values()),
               "web_workers_rss_mb": sum(mem[p]["rss"] for p in gworkers)}
        wpids = {w.pid for w in self.workers}
        tree = [p for w in self.workers for p in proc_descendants(w.pid)]
        wmem = {pid: proc_memory_kib(pid) for pid in tree}
        out.update(worker_rss_mb=sum(m["rss"] for m in wmem.values()), worker_pss_mb=sum(m["pss"] for m in wmem.values()),
                   worker_pools_rss_mb=sum(m["rss"] for p, m in wmem.items() if p not in wpids))
        out = {k: round(v / 1024, 1) for k, v in out.items()}
        out["web_pids"], out["worker_pids"] = len(web), len(tree)
        return out

    def run_rss(self) -> None:
        args = self.args
        args.workers = 2
        self.web_ensure()
        self.workers_start()
        mem = self.result["memory"] = {"events": args.events, "sample_every": args.sample_every, "warmup_events": args.warmup_events,
                                       "web_concurrency": args.web_concurrency, "workers": 2, "samples": []}
        samples = mem["samples"]
        t0 = time.time()

        def done_received() -> tuple[int, int]:
            rows = dict(self.sql("SELECT status IN ('processed','ignored','dead'), count(*) FROM webhooks_webhookevent GROUP BY 1"))
            return rows.get(True, 0), rows.get(True, 0) + rows.get(False, 0)

        def sample(fulfilled: int, received: int) -> None:
            s = {"fulfilled": fulfilled, "received": received, "seconds": round(time.time() - t0, 1), "load": loadavg().split()[0],
                 **self.memory_sample()}
            samples.append(s)
            mem["slopes_mb_per_10k"] = memory_slopes(samples, args.warmup_events)
            self.save()
            log(f"rss: {s}")

        sample(*done_received())
        next_mark = args.sample_every
        posted_new = 0
        last_log = time.monotonic()
        stop_flag = threading.Event()
        deadline = time.monotonic() + args.max_seconds
        try:
            while posted_new < args.events and time.monotonic() < deadline:
                chunk = min(args.sample_every, args.events - posted_new)
                args.live_seconds = chunk / args.rate
                phase = f"rss{posted_new // args.sample_every:03d}"
                schedule = self.live_schedule(phase)
                new = [s for s in schedule if s[2] == "new"]
                posted = asyncio.run(open_loop(schedule, port=self.port, secret=self.secret, timeout=30, stop=stop_flag))
                bad = [o for o in posted if (o["expected"], o["code"]) not in (("new", 200), ("again", 200))]
                if bad:
                    raise RuntimeError(f"unexpected answers: {collections.Counter((o['code'], o['status']) for o in bad)}")
                posted_new += len(new)
                # Keep events flowing at about the fulfilment rate: wait while the backlog is over one chunk;
                # sample every --sample-every fulfilled events on the way.
                while True:
                    fulfilled, received = done_received()
                    if fulfilled >= next_mark:
                        sample(fulfilled, received)
                        next_mark = (fulfilled // args.sample_every + 1) * args.sample_every
                        if "costs_probe_this_db_only" not in mem and fulfilled >= args.warmup_events // 2:
                            mem["costs_probe_this_db_only"] = self.costs_probe(args.probe_seconds)
                            log(f"rss: costs {mem['costs_probe_this_db_only']}")
                    for proc in self.workers:
                        if not proc.alive():
                            raise RuntimeError(f"{proc.name} died:\n{proc.log()[-3000:]}")
                    if received - fulfilled < args.sample_every or posted_new >= args.events:
                        break
                    if time.monotonic() - last_log > 60:
                        log(f"rss: {fulfilled} fulfilled of {received} received; load {loadavg()}")
                        last_log = time.monotonic()
                    time.sleep(1.0)
            ids = [pid for pid, e in self.expected.items() if e["phase"].startswith("rss")]
            self.wait_done(ids, timeout=args.max_drain_seconds)
            fulfilled, received = done_received()
            if not samples or samples[-1]["fulfilled"] < fulfilled:
                sample(fulfilled, received)
        finally:
            self.workers_stop()
        mem["seconds"] = round(time.time() - t0, 1)
        mem["checks"] = self.verify(ids)
        mem["passed"] = mem["checks"]["passed"]
        self.save()

    # -- whole run --
    def save(self) -> None:
        self.output.write_text(json.dumps(self.result, indent=2, default=str))

    def run(self) -> dict:
        args = self.args
        commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
        self.output = Path(args.output) if args.output else self.results_dir / f"scaleout-{'rss' if args.rss else 'hosts'}-{self.stamp}.json"
        self.result.update(benchmark="payhook scale-out", mode="rss" if args.rss else "hosts", code=str(ROOT), commit=commit,
                           command=" ".join([".venv/bin/python", "bench/scaleout.py", *sys.argv[1:]]),
                           options=vars(args), env_passthrough=self.passthrough, machine=self.machine_info())
        self.setup()
        self.claim_sql = self.claim_query_sql()
        self.result["batch_size"] = self._batch_size()
        try:
            if args.rss:
                self.run_rss()
            else:
                self.run_scaleout()
        finally:
            if self.web:
                self.web.stop(timeout=30)
                self.web = None
        self.result["machine"]["loadavg_end"] = loadavg()
        parts = self.result["steps"] if not args.rss else [self.result["memory"]]
        self.result["all_checks_passed"] = bool(parts) and all(p.get("passed") for p in parts)
        self.save()
        return self.result


def scaleout_table(steps: list[dict]) -> str:
    rows = []
    for s in steps:
        c = s["cpu_pct_of_one_core"]
        waits = ", ".join(f"{k} {v}%" for k, v in list(s["pg_wait_events_pct_of_active"].items())[:3])
        rows.append([s["hosts"], s["web_concurrency"], s["accepted_per_s"], s["fulfilled_per_s_while_posting"], s["drain_after_posting"]["per_s"],
                     s["backlog_at_end_of_posting"], c["web"], c["worker"], c["pg_backends"], c["pg_background"], c["redis"],
                     s["machine_busy_pct"], s["pg_commits_per_s"], s["whole_step"]["pg_commits_per_event"],
                     s["whole_step"]["cpu_ms_per_event"]["worker"], s["whole_step"]["cpu_ms_per_event"]["pg_backends"],
                     s["relay_claim_query_ms"].get("p50"), s["relay_claim_query_ms"].get("p99"), waits,
                     s["http"]["latency_ms"].get("p99"), "passed" if s["passed"] else "FAILED", s["load"]])
    return render_table(["M hosts", "N web", "accepted/s", "fulfilled/s (posting)", "drain/s (after)", "backlog", "web CPU %",
                         "worker CPU %", "PG backends CPU %", "PG bg CPU %", "Redis CPU %", "machine busy %", "PG commits/s",
                         "commits/event", "worker CPU ms/event", "PG CPU ms/event", "claim p50 ms", "claim p99 ms", "PG active-session waits", "HTTP p99 ms", "checks", "load"], rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Scale-out of payhook: N web processes and M worker hosts against one PostgreSQL and Redis; "
                    "with --rss, web and worker memory over many events. "
                    "After a merge, rerun the memory series with: .venv/bin/python bench/scaleout.py --rss --events 100000",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rss", action="store_true", help="memory mode: RSS/PSS of web and 2 workers sampled over --events events")
    p.add_argument("--events", type=int, default=100_000, help="--rss: new events posted over HTTP")
    p.add_argument("--sample-every", type=int, default=5000, help="--rss: memory sampled every this many fulfilled events")
    p.add_argument("--warmup-events", type=int, default=20_000, help="--rss: the slope uses samples from this many fulfilled events on")
    p.add_argument("--max-seconds", type=float, default=3000.0, help="--rss: stop posting after this long (the samples so far are kept)")
    p.add_argument("--hosts", default="1,2,3,4", help="scale-out: worker host counts M, one step each")
    p.add_argument("--web-concurrency", type=int, default=2, help="gunicorn WEB_CONCURRENCY of the one web process")
    p.add_argument("--concurrency", type=int, default=1, help="CELERY_CONCURRENCY of each worker host")
    p.add_argument("--rate", type=float, default=120.0, help="new events posted per second, open loop (+--redelivery)")
    p.add_argument("--seconds", type=float, default=30.0, help="scale-out: posting time per step")
    p.add_argument("--probe-seconds", type=float, default=8.0,
                   help="Redis MONITOR + WAL (pg_walinspect) + commits of this database only, once per step / once in --rss")
    p.add_argument("--sample-seconds", type=float, default=1.0, help="scale-out: sampler period (PG waits, claim query)")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--redelivery", type=float, default=0.2, help="fraction of events delivered a second time, 3 s later")
    p.add_argument("--opt-out", type=float, default=0.1)
    p.add_argument("--celery-log-level", default="WARNING", help="CELERY_LOG_LEVEL (INFO logs every task)")
    p.add_argument("--email-backend", default=None,
                   help="default: locmem for the scale-out steps; the dummy backend with --rss, because locmem keeps every "
                        "sent message in the process (mail.outbox), which showed as worker memory growing ~3 KB per e-mail")
    p.add_argument("--max-drain-seconds", type=float, default=900.0)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--database", default="payhook_scalebench", help="PostgreSQL database, DROPPED and recreated")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--redis-db", type=int, default=12, help="Redis database used as broker, FLUSHED before and after")
    p.add_argument("--keep-database", action="store_true")
    p.add_argument("--label", default="")
    p.add_argument("--output", default="", help="results JSON (default bench/results/scaleout-<mode>-<time>.json)")
    args = p.parse_args(argv)
    try:
        args.hosts = [int(x) for x in args.hosts.split(",") if x.strip()]
    except ValueError:
        p.error("--hosts: comma-separated integers")
    if not args.hosts or any(m < 1 or m > 16 for m in args.hosts):
        p.error("--hosts: each between 1 and 16")
    if "bench" not in args.database or not re.fullmatch(r"[a-z_][a-z0-9_]*", args.database):
        p.error("--database must be a plain name containing 'bench' (it is dropped and recreated)")
    if args.redis_db == 0:
        p.error("--redis-db 0 is refused: it is flushed")
    if args.rate <= 0 or args.seconds <= 0 or args.events < 1 or args.sample_every < 1 or args.web_concurrency < 1:
        p.error("--rate, --seconds, --events, --sample-every and --web-concurrency must be positive")
    if args.email_backend is None:
        args.email_backend = "django.core.mail.backends." + ("dummy" if args.rss else "locmem") + ".EmailBackend"
    # What bench/pipeline.py's Bench reads.
    args.live_seconds = args.seconds
    args.workers = 2
    args.scrape_metrics = False
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bench = ScaleBench(args)
    log(f"code under test: {ROOT}")
    try:
        result = bench.run()
    finally:
        bench.cleanup()
    print()
    if result.get("steps"):
        print(scaleout_table(result["steps"]))
    mem = result.get("memory") or {}
    if mem.get("samples"):
        print(render_table(MEMORY_HEADER, memory_rows(mem["samples"])))
        print(f"slopes after {mem['warmup_events']} events, MB per 10k events: {mem.get('slopes_mb_per_10k')}")
    print(f"\nresults: {bench.output}")
    return 0 if result["all_checks_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
