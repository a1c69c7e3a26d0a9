"""The benchmarks' own database and Redis database on the servers named by --pg-*/--redis-* (shared
servers: a bench drops and recreates its database and flushes its Redis db, nothing else)."""

import base64
import json


class Store:
    """Database `args.database` on the named PostgreSQL server, dropped and recreated by the bench."""

    def __init__(self, args):
        import psycopg

        self.psycopg = psycopg
        self.database = args.database
        self.admin_dsn = f"host={args.pg_host} port={args.pg_port} user={args.pg_user} dbname=postgres"
        self.dsn = f"host={args.pg_host} port={args.pg_port} user={args.pg_user} dbname={args.database}"
        self.url = f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}"

    def recreate(self) -> None:
        with self.psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def drop(self) -> None:
        with self.psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def scalar(self, sql: str, params=()):
        with self.psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, params).fetchone()[0]

    def execute(self, sql: str) -> None:
        with self.psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql)

    def backend_pids(self) -> list[int]:
        with self.psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return [row[0] for row in rows]

    def version(self) -> str:
        with self.psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def checkpoints(self) -> int | None:
        try:
            return self.scalar("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        except self.psycopg.Error:
            return None


class Broker:
    """Redis db `args.redis_db` as the Celery broker; reads what the outbox relay published."""

    def __init__(self, args):
        import redis

        self.client = redis.Redis(host=args.redis_host, port=args.redis_port, db=args.redis_db)
        self.url = f"redis://{args.redis_host}:{args.redis_port}/{args.redis_db}"
        self._seen = 0
        self.messages = 0
        self.event_ids: set[str] = set()

    def flush(self) -> None:
        self.client.flushdb()
        self._seen, self.messages, self.event_ids = 0, 0, set()

    def version(self) -> str:
        return self.client.info("server")["redis_version"]

    def collect(self, queue: str = "payhook") -> None:
        """Decode the task messages published since the last call (kombu LPUSHes: new ones at the head)."""
        length = self.client.llen(queue)
        for raw in self.client.lrange(queue, 0, length - self._seen - 1) if length > self._seen else []:
            message = json.loads(raw)
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
            self.event_ids.update(args[0])
            self.messages += 1
        self._seen = length
