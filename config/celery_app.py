import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

from config.tracing import tracing_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("payhook")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@worker_process_init.connect
def _tracing_init(**kwargs) -> None:
    """Traces, if configured (config/tracing.py): in the worker's main process, where the outbox relay
    publishes, and in each pool process, where tasks run (one forked from an initialised main
    process keeps what it inherited)."""
    tracing_init()
