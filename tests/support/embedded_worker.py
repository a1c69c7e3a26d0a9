"""A real Celery worker in a thread of the test process, consuming from the test Redis broker.

Celery's embedded test worker (solo pool) takes real messages, acknowledges them and runs the
task's signals like the Procfile's worker, not eager mode; being in this process, what it does is
seen by in-process instruments (an in-memory span exporter, sentry-sdk's integrations, mail.outbox).
Celery sets up logging for it (hijacking the root logger) and records its log level in the process
environment (`CELERY_LOG_LEVEL=40`, which every process a later test starts would inherit: the
Procfile's `celery worker --loglevel ${CELERY_LOG_LEVEL:-INFO}` then refuses to start): both are undone
afterwards.
"""

import contextlib
import logging
import os

from celery.contrib.testing.worker import start_worker

from config.celery_app import app as celery_app


@contextlib.contextmanager
def embedded_worker():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    environ = dict(os.environ)
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30) as worker:
            yield worker
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
