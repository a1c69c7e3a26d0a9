"""PostgreSQL becomes unreachable while workers fulfil events (every connection reset, new ones
refused, through a loopback proxy), then comes back: nothing is lost and nothing applied twice."""

import time

import pytest

from tests.faults.invariants import invariants_check
from tests.support.processes import wait_for, worker_start
from tests.support.tcp_proxy import proxy_in_front_of
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 60


def test_database_outage_during_processing_recovers_with_each_effect_once(purchases, post_events, fault_env, tmp_path):
    proxy, via_proxy = proxy_in_front_of(fault_env["DATABASE_URL"], 5432)
    env = {**fault_env, "DATABASE_URL": via_proxy, "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",
           "WEBHOOK_REDISPATCH_AFTER_SECONDS": "2", "WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS": "5"}
    worker = worker_start(env, tmp_path / "worker.log", concurrency=1, beat=True)
    try:
        post_events(purchases(N))
        wait_for(lambda: WebhookEvent.objects.filter(status="processed").exists(), timeout=30, interval=0.01,
                 message="processing under way")
        proxy.cut()
        time.sleep(3)
        proxy.restore()
        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=180, message="every event finished after the outage")
    finally:
        worker.stop()
        proxy.close()

    counts = invariants_check(expected_events=N)
    assert counts["status_processed"] == N, worker.log()[-3000:]
    assert counts["entitlements"] == 2 * N
