import os

from celery import Celery
from celery.signals import worker_process_shutdown

from config.metrics import process_dead_mark

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("payhook")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- Prometheus multiprocess mode (docs/metrics.md) ---------------------------------------------------
# Each pool process writes its metrics under PROMETHEUS_MULTIPROC_DIR, where the web's /metrics sums them.
@worker_process_shutdown.connect
def _metrics_process_dead(pid=None, **kwargs) -> None:
    process_dead_mark(pid or os.getpid())
