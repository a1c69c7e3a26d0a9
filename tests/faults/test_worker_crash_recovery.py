"""A worker's whole process group SIGKILLed twice mid-stream and replaced, with production defaults
(WEBHOOK_LEASE_SECONDS, the sweep interval, the e-mail recovery: nothing overridden), mail to files.

The issue measured this from outside with 300 checkouts on the old code: nothing lost, but the last
events were processed 597 s after the last crash (their ids waited in the dead worker's unacked
messages for WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS), and 20 receipts were ambiguous. Scaled down to
90 checkouts to keep the suite short on 2 cores; the recovery time does not depend on the count.
"""

import signal
import time
from datetime import timedelta

import psutil
import pytest
from django.conf import settings
from django.utils import timezone

from notifications.models import Notification
from tests.faults.invariants import invariants_check
from tests.support.processes import BIN, Process, wait_for, worker_start
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N, CHUNK, CONCURRENCY = 90, 30, 2  # CONCURRENCY: the Procfile's default
UNFINISHED = ["received", "processing", "failed"]
TUNABLES = ("WEBHOOK_LEASE_SECONDS", "WEBHOOK_SWEEP_INTERVAL_SECONDS", "WEBHOOK_REDISPATCH_AFTER_SECONDS",
            "WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS", "NOTIFICATION_RECOVERY_INTERVAL_SECONDS",
            "NOTIFICATION_RECOVERY_AFTER_SECONDS", "CELERY_BROKER_VISIBILITY_TIMEOUT")


def _beat_start(env, log_path) -> Process:
    """beat as its own process, as the Procfile runs it: it outlives the workers' crashes."""
    return Process([str(BIN / "celery"), "-A", "config", "beat", "--loglevel", "INFO", "--schedule",
                    str(log_path.with_suffix(".schedule"))], env, log_path)


def _leased_unfinished() -> list:
    return list(WebhookEvent.objects.filter(status__in=UNFINISHED).exclude(lease_holder="").values_list("id", flat=True))


def test_a_crashed_worker_s_events_are_reclaimed_within_seconds_with_production_defaults(
    purchases, post_events, fault_env, tmp_path
):
    assert not set(TUNABLES) & set(fault_env), "production defaults: nothing overridden"
    events = purchases(N)
    beat = _beat_start(fault_env, tmp_path / "beat.log")
    workers = [worker_start(fault_env, tmp_path / "worker0.log", concurrency=CONCURRENCY, name="w0")]
    kills = []  # (wall time of the kill, ids leased and unfinished at that moment, pool processes killed)
    try:
        for round_ in (1, 2):
            post_events(events[(round_ - 1) * CHUNK : round_ * CHUNK])
            stranded = wait_for(_leased_unfinished, timeout=30, interval=0.005, message="events leased mid-fulfilment")
            pool = len(psutil.Process(workers[-1].pid).children())
            workers[-1].stop(signal.SIGKILL)  # the whole process group, as a crash or OOM kill of the container
            kills.append((timezone.now(), stranded, pool))
            last_kill = time.monotonic()
            workers.append(worker_start(fault_env, tmp_path / f"worker{round_}.log", concurrency=CONCURRENCY, name=f"w{round_}"))
        post_events(events[2 * CHUNK :])
        try:
            wait_for(lambda: not WebhookEvent.objects.filter(status__in=UNFINISHED).exists(), timeout=150,
                     message="every event processed after the last crash")
        except AssertionError as exc:  # say which events were left, and in what state
            left = list(WebhookEvent.objects.filter(status__in=UNFINISHED).values(
                "id", "status", "attempts", "last_error", "lease_holder", "lease_expires_at", "dispatched_at"))
            raise AssertionError(f"{exc}; left: {left}; kills: {kills}") from None
        recovered_after = time.monotonic() - last_kill
        wait_for(lambda: not Notification.objects.filter(status="queued").exists(), timeout=60,
                 message="queued receipts sent by the recovery task")
    finally:
        for worker in workers:
            worker.stop()
        beat.stop()

    logs = "".join(worker.log() for worker in workers[1:])
    # The fault landed: each kill left leased, unfinished events, and the sweep found their leases lapsed.
    assert all(stranded for _, stranded, _ in kills)
    assert "whose worker lease lapsed" in logs, logs[-3000:]
    killed_processes = sum(pool for _, _, pool in kills)
    counts = invariants_check(expected_events=N, mail_dir=tmp_path / "mail", sending_windows=killed_processes)
    assert counts["status_processed"] == N
    assert counts["entitlements"] == 2 * N
    lost = N - counts["emails_sent"] - counts["emails_stuck_sending"]
    assert lost == 0
    assert counts["emails_sent"] == counts["mail_messages"] - counts["ambiguous_that_left"]
    assert recovered_after <= 90, f"last event processed {recovered_after:.1f}s after the last crash"

    per_kill = []
    for killed_at, stranded, _ in kills:
        done = max(WebhookEvent.objects.filter(id__in=stranded).values_list("processed_at", flat=True))
        per_kill.append(f"{len(stranded)} stranded, done {(done - killed_at) / timedelta(seconds=1):.1f}s after the kill")
    print(
        f"worker crash recovery (lease {settings.WEBHOOK_LEASE_SECONDS}s, "
        f"sweep every {settings.CELERY_BEAT_SCHEDULE['webhook-events-dispatch']['schedule']:g}s, concurrency {CONCURRENCY}, "
        f"{N} checkouts, 2 kills of {killed_processes} pool processes): every event processed "
        f"{recovered_after:.1f}s after the last crash; {'; '.join(per_kill)}; receipts sent {counts['emails_sent']} "
        f"(mail messages {counts['mail_messages']}), lost {lost}, ambiguous `sending` {counts['emails_stuck_sending']}"
    )
