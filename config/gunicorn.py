# gunicorn's settings for the Procfile's web process (and compose's web service).
import os

from config.logs import logging_config

# Sync workers with a read deadline per client and JSON for gunicorn's own errors (config/gunicorn_worker.py).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "config.gunicorn_worker.DeadlineSyncWorker")
# gunicorn reads WEB_CONCURRENCY itself, but defaults to one worker: one slow request would stall
# every delivery behind it.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# No access log by default: request lines can carry client addresses.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# Header limits, raised from gunicorn's defaults (100 fields, 8,190 bytes a field) so that the app,
# not gunicorn's HTML error page, answers a hostile signature header: the schemes refuse more than
# 32 signature entries with a JSON 400 malformed_signature, and a header up to 64 KiB (about 900 entries) reaches them.
# Past these limits gunicorn itself answers 431/400 (JSON, config/gunicorn_worker.py; nothing read or stored); a proxy in
# front usually refuses far less (nginx: 8 KiB per header line by default), which is fine too.
limit_request_fields = 200
limit_request_field_size = 65536

# --- Prometheus multiprocess mode (docs/metrics.md) ---------------------------------------------------
# With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics to files there and /metrics sums
# them (config/metrics.py); a worker that exits is marked dead there.
from config.metrics import process_dead_mark  # noqa: E402


def child_exit(server, worker):
    process_dead_mark(worker.pid)


# gunicorn's own lines (booting, worker timeouts, errors it answers itself) as JSON lines like every
# other line (config/logs.py); the workers' Django logging uses the same formatter. The master reads
# LOG_FORMAT from the environment only (honcho exports .env under `make run`).
logconfig_dict = logging_config(
    log_format=os.environ.get("LOG_FORMAT", "json"),
    level=os.environ.get("DJANGO_LOG_LEVEL", "INFO"),
    loggers={
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        # gunicorn writes access lines whenever a logconfig is given: off unless GUNICORN_ACCESS_LOG
        # is set, and then JSON lines too, to stdout (`-`) or to that file.
        "gunicorn.access": {"level": "INFO" if accesslog else "CRITICAL", "handlers": ["access"], "propagate": False},
    },
)
logconfig_dict["handlers"]["access"] = (
    {"class": "logging.FileHandler", "formatter": "structured", "filename": accesslog}
    if accesslog and accesslog != "-"
    else {"class": "logging.StreamHandler", "formatter": "structured", "stream": "ext://sys.stdout"}
)
# Method, path without its query, status, size and duration: never the client address, the query
# string or a header value (gunicorn's default has all three: referer and user agent).
access_log_format = '"%(m)s %(U)s" %(s)s %(B)s %(M)sms'
