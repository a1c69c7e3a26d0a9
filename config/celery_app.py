import os

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from config.metrics import process_dead_mark
from config.tracing import tracing_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

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
