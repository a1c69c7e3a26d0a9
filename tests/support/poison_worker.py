"""A Celery app for fault tests: the real one, plus a poison that kills its own worker process.

Fulfilling an event whose provider id starts with `evt_poison` SIGKILLs the pool process, as a
segfault or the OOM killer would. Only tests start workers with `-A tests.support.poison_worker`.
"""

import os
import signal

import django

from config.celery_app import app  # noqa: F401  (the app this module stands in for)

django.setup()  # models must be loadable before the patch below imports the services

from webhooks import processing

_fulfil = processing.webhook_event_fulfil


def _poisoned_fulfil(*, event, **batch):
    # `batch`: the unit of work and reads of a set-based batch; the kill then takes the batch down.
    if event.provider_event_id.startswith("evt_poison"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _fulfil(event=event, **batch)


processing.webhook_event_fulfil = _poisoned_fulfil
