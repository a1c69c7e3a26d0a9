#!/usr/bin/env python
"""Where a webhook request's CPU goes, in-process: N signed Stripe deliveries (then N redeliveries)
through the web process's own WSGI application (config/handlers.py, as gunicorn calls it) against a
real PostgreSQL database, under cProfile. No network, no gunicorn: what is left is payhook's own work
plus Django's and psycopg's.

    .venv/bin/python bench/receive_profile.py --database payhook_bench_prof --requests 2000

Prints, per phase (new, redelivery), the wall and CPU µs per request and the functions with the most
own time and the most cumulative time. The database is DROPPED and recreated.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="payhook_bench_prof", help="PostgreSQL database, DROPPED and recreated")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL (no database)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--body-bytes", type=int, default=2500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--handler", choices=("web", "full-chain"), default="web",
                        help="web: the web process's application (lean chain on /webhooks/); full-chain: Django's "
                             "WSGIHandler with every MIDDLEWARE (as before issue 13)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="only time the requests (cProfile's own overhead inflates the CPU figures)")
    args = parser.parse_args()
    if "bench" not in args.database or not re.fullmatch(r"[a-z_][a-z0-9_]*", args.database):
        parser.error("--database must be a plain name containing 'bench' (it is dropped and recreated)")

    import psycopg
    from cryptography.fernet import Fernet

    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {args.database}")
    for key in [k for k in os.environ if k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "SENTRY_", "OTEL_"))]:
        del os.environ[key]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings", DATABASE_URL=f"{args.pg}/{args.database}",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50), FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        BLIND_INDEX_KEY=secrets.token_urlsafe(32), AUDIT_CHAIN_KEY=secrets.token_urlsafe(32),
        DJANGO_LOG_LEVEL="WARNING", DJANGO_DEBUG="false", CELERY_BROKER_URL="memory://",
    )
    import django

    django.setup(set_prefix=False)
    from django.core.management import call_command
    from django.test import RequestFactory

    from bench.ingest import Bodies, redelivered
    from providers import scheme_get
    from webhooks import endpoints

    call_command("migrate", verbosity=0)
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoints.webhook_endpoint_create(slug="bench", scheme="stripe", secret=secret)
    if args.handler == "web":
        from config.handlers import application_build

        application = application_build()
    else:
        from django.core.handlers.wsgi import WSGIHandler

        application = WSGIHandler()
    scheme = scheme_get("stripe")
    factory = RequestFactory()

    def environ_for(body: bytes) -> dict:
        headers = scheme.sign(secret=secret, body=body, timestamp=int(time.time()), event_id="")
        extra = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
        return factory.generic("POST", "/webhooks/bench/", body, content_type="application/json", **extra).environ

    def call(environ) -> bytes:
        result = application(environ, lambda status, headers, exc_info=None: None)
        try:
            return b"".join(result)
        finally:
            result.close()

    bodies = Bodies(args.body_bytes)
    warm = [environ_for(body) for _, body in bodies.new(200, "warm")]
    for environ in warm:
        call(environ)
    items = bodies.new(args.requests, "prof")
    out = {}
    for phase, expected, environs in (
        ("new", "accepted", [environ_for(body) for _, body in items]),
        ("redelivery", "duplicate", [environ_for(redelivered(body)) for _, body in items]),
    ):
        profiler = cProfile.Profile()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if args.profile:
            profiler.enable()
        answers = [call(environ) for environ in environs]
        profiler.disable()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        assert all(json.loads(a)["status"] == expected for a in answers), answers[:3]
        n = len(environs)
        print(f"\n=== {phase} ({args.handler}): {n} requests, {wall / n * 1e6:.0f} µs wall and {cpu / n * 1e6:.0f} µs CPU "
              f"per request{' (under cProfile: compare phases and runs, not absolute figures)' if args.profile else ''}")
        for order in ("tottime", "cumulative") if args.profile else ():
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(args.top)
            print(text.getvalue().split("\n", 6)[-1])
        out[phase] = {"wall_us": round(wall / n * 1e6), "cpu_us": round(cpu / n * 1e6)}
    print(json.dumps(out))
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
