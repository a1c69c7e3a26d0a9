import logging
import logging.config
import os
import sys

from celery import Celery
from celery.signals import (
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)
from celery.utils.log import LoggingProxy
from django.conf import settings

from config.logs import task_context_bind, task_context_clear
from config.metrics import process_dead_mark
from config.tracing import tracing_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)

app = Celery("payhook")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- Prometheus multiprocess mode (docs/metrics.md) ---------------------------------------------------
# Each pool process writes its metrics under PROMETHEUS_MULTIPROC_DIR, where the web's /metrics sums them.
@worker_process_shutdown.connect
def _metrics_process_dead(pid=None, **kwargs) -> None:
    process_dead_mark(pid or os.getpid())


# --- Traces (docs/tracing.md) ---------------------------------------------------------------------------
@worker_init.connect
@worker_process_init.connect
def _tracing_init(**kwargs) -> None:
    """Traces, if configured (config/tracing.py): in the worker's main process, where the outbox relay
    publishes, and in each pool process, where tasks run (one forked from an initialised main
    process keeps what it inherited)."""
    tracing_init()


# --- Logs as JSON lines (docs/logging.md) ----------------------------------------------------------------
@setup_logging.connect
def _logging_setup(loglevel=None, **kwargs) -> None:
    """Worker and beat log through Django's LOGGING (JSON lines) instead of Celery's own handler;
    the root level stays `--loglevel`, as Celery would set it."""
    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
    # What is printed rather than logged (a library's print(), Celery's own notices to sys.__stdout__)
    # becomes a log line too, or is dropped where Celery writes to the file descriptor in a signal
    # handler ("worker: Warm shutdown"; _shutdown_notice_log says it instead). The handler writes to stderr.
    sys.stdout = sys.__stdout__ = LoggingProxy(logging.getLogger("celery.redirected"), logging.WARNING)


@worker_shutting_down.connect
def _shutdown_notice_log(sig=None, how=None, exitcode=None, **kwargs) -> None:
    logger.info("worker shutting down", extra={"how": how, "signal": sig, "exitcode": exitcode})


@celeryd_init.connect
def _warnings_capture(**kwargs) -> None:
    """The worker's start-up checks warn before its logging is set up (running as root: a
    SecurityWarning): warnings become log lines from here on, as Django's logging makes them."""
    logging.captureWarnings(True)


@task_prerun.connect
def _task_context_bind(task_id=None, task=None, **kwargs) -> None:
    task_context_bind(task_name=task.name, task_id=task_id, retries=task.request.retries or 0)


@task_postrun.connect
def _task_context_clear(**kwargs) -> None:
    task_context_clear()
