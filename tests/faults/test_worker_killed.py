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


def _all_finished() -> bool:
    return not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists()


def test_killed_pool_process_is_replaced_and_its_task_redelivered(purchases, post_events, fault_env, tmp_path, settings):
    worker = worker_start(fault_env, tmp_path / "worker.log", concurrency=1)
    try:
        post_events(purchases(N))
        wait_for(_processing_now, timeout=30, interval=0.005, message="an event mid-fulfilment")
        [child] = psutil.Process(worker.pid).children()
        os.kill(child.pid, signal.SIGKILL)
        wait_for(_all_finished, timeout=120, message="all events done after the kill")
    finally:
        worker.stop()

    log = worker.log()
    # The fault landed: the pool process died with a task, and its replacement took over the dead
    # process's lease at once (no waiting for it to lapse). Whether the killed event had already
    # counted its attempt (attempts == 2 after the retry) depends on where in the batch the kill
    # fell, so the lease takeover is the proof that in-flight work was interrupted.
    assert "WorkerLostError" in log or "SIGKILL" in log
    assert "lease taken over from a dead process" in log, log[-3000:]
    # E-mails the killed process had committed but not yet claimed are `queued`: the recovery task
    # (run here, writing to the same mail directory) sends them, once.
    settings.EMAIL_BACKEND, settings.EMAIL_FILE_PATH = fault_env["EMAIL_BACKEND"], fault_env["EMAIL_FILE_PATH"]
    recovered = notification_emails_queued_deliver(older_than_seconds=0)
    assert notification_emails_queued_deliver(older_than_seconds=0) == 0
    counts = invariants_check(expected_events=N, mail_dir=tmp_path / "mail", sending_windows=1)
    assert counts == {**counts, "status_processed": N, "entitlements": 2 * N}
    assert counts["emails_sent"] + counts["emails_stuck_sending"] == N
    print(f"pool process killed: {recovered} queued e-mails recovered, {counts['emails_stuck_sending']} ambiguous")


def test_killed_worker_host_loses_nothing_its_lapsed_leases_are_republished(purchases, post_events, fault_env, tmp_path):
    worker = worker_start(fault_env, tmp_path / "worker1.log", concurrency=1)
    try:
        post_events(purchases(N))
        wait_for(_processing_now, timeout=30, interval=0.005, message="an event mid-fulfilment")
    finally:
        worker.stop(signal.SIGKILL)  # the whole worker, parent included: its unacked message is stranded
    stranded = WebhookEvent.objects.exclude(lease_holder="").exclude(status__in=["processed", "ignored", "dead"]).count()

    # A short lease keeps this test quick; test_worker_crash_recovery.py runs the defaults.
    env = {**fault_env, "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1", "WEBHOOK_LEASE_SECONDS": "3"}
    replacement = worker_start(env, tmp_path / "worker2.log", concurrency=1, beat=True, name="w2")
    try:
        wait_for(_all_finished, timeout=120, message="all events done by the replacement worker")
        wait_for(lambda: not Notification.objects.filter(status="queued").exists(), timeout=60,
                 message="queued e-mails recovered")
    finally:
        replacement.stop()

    assert stranded > 0, "the kill left leased, unfinished events"
    assert "whose worker lease lapsed" in replacement.log(), replacement.log()[-3000:]
    counts = invariants_check(expected_events=N, mail_dir=tmp_path / "mail", sending_windows=1)
    assert counts["status_processed"] == N
    assert counts["entitlements"] == 2 * N
    assert counts["emails_sent"] + counts["emails_stuck_sending"] == N
