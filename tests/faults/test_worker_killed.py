"""SIGKILL a worker in the middle of fulfilment: every event still completes, each effect once."""

import os
import signal

import psutil
import pytest

from notifications.models import Notification
from notifications.services import notification_emails_queued_deliver
from tests.faults.invariants import invariants_check
from tests.support.processes import wait_for, worker_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 60


def _processing_now() -> bool:
    return WebhookEvent.objects.filter(status="processing").exists()


def test_killed_pool_process_is_replaced_and_its_task_redelivered(purchases, post_events, fault_env, tmp_path):
    worker = worker_start(fault_env, tmp_path / "worker.log", concurrency=1)
    try:
        post_events(purchases(N))
        wait_for(_processing_now, timeout=30, interval=0.005, message="an event mid-fulfilment")
        [child] = psutil.Process(worker.pid).children()
        os.kill(child.pid, signal.SIGKILL)

        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=120, message="all events done after the kill")
    finally:
        worker.stop()

    assert "WorkerLostError" in worker.log() or "SIGKILL" in worker.log()
    counts = invariants_check(expected_events=N)
    assert counts == {**counts, "status_processed": N, "entitlements": 2 * N}
    assert WebhookEvent.objects.filter(attempts__gte=2).exists(), "the killed task was retried from the database counter"
    # Emails the killed process had committed but not yet handed to the backend are `queued`: the
    # recovery task sends them, once; none was left `sending` (mid-send), so every buyer gets one.
    notification_emails_queued_deliver(older_than_seconds=0)
    assert Notification.objects.filter(channel="email", status="sent").count() == N
    assert notification_emails_queued_deliver(older_than_seconds=0) == 0


def test_killed_worker_host_loses_nothing_the_sweep_republishes(purchases, post_events, fault_env, tmp_path):
    worker = worker_start(fault_env, tmp_path / "worker1.log", concurrency=1)
    try:
        post_events(purchases(N))
        wait_for(_processing_now, timeout=30, interval=0.005, message="an event mid-fulfilment")
    finally:
        worker.stop(signal.SIGKILL)  # the whole worker, parent included: its unacked message is stranded

    env = {**fault_env, "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1", "WEBHOOK_REDISPATCH_AFTER_SECONDS": "1",
           "WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS": "2"}
    replacement = worker_start(env, tmp_path / "worker2.log", concurrency=1, beat=True, name="w2")
    try:
        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=120, message="all events done by the replacement worker")
    finally:
        replacement.stop()

    counts = invariants_check(expected_events=N)
    assert counts["status_processed"] == N
    assert counts["entitlements"] == 2 * N
