# gunicorn reads WEB_CONCURRENCY itself for the worker count; these are the rest of its settings.
import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# No access log by default: request lines can carry client addresses.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
