"""PostgreSQL becomes unreachable while workers fulfil events (every connection reset, new ones
refused, through a loopback proxy), then comes back: nothing is lost and nothing applied twice."""

import re
import time

import pytest

from notifications.services import notification_emails_queued_deliver
from tests.faults.invariants import invariants_check
from tests.support.processes import wait_for, worker_start
from tests.support.tcp_proxy import TcpProxy
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

N = 60
DB_ERROR = re.compile(r"(event processing will retry|event lease failed|outcome record will retry).*(OperationalError|InterfaceError)")


def test_proxy_url_keeps_credentials_database_and_options_of_the_url():
    proxy, url = TcpProxy.for_url("postgres://payhook:s3cret@127.0.0.1:5433/payhook_x?sslmode=disable")
    try:
        assert proxy.target == ("127.0.0.1", 5433)
        assert url == f"postgres://payhook:s3cret@127.0.0.1:{proxy.port}/payhook_x?sslmode=disable"
    finally:
        proxy.close()


def test_database_outage_during_processing_recovers_with_each_effect_once(purchases, post_events, fault_env, tmp_path, settings):
    proxy, via_proxy = TcpProxy.for_url(fault_env["DATABASE_URL"])
    env = {**fault_env, "DATABASE_URL": via_proxy, "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",
           "WEBHOOK_REDISPATCH_AFTER_SECONDS": "2", "WEBHOOK_REDISPATCH_LOST_AFTER_SECONDS": "5"}
    worker = worker_start(env, tmp_path / "worker.log", concurrency=1, beat=True)
    try:
        post_events(purchases(N))
        wait_for(lambda: WebhookEvent.objects.filter(status="processed").exists(), timeout=30, interval=0.01,
                 message="processing under way")
        proxy.cut()
        unfinished_at_cut = WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).count()
        time.sleep(3)
        proxy.restore()
        wait_for(lambda: not WebhookEvent.objects.exclude(status__in=["processed", "ignored", "dead"]).exists(),
                 timeout=180, message="every event finished after the outage")
    finally:
        worker.stop()
        proxy.close()

    # The fault landed on in-flight work: events were unfinished, and the worker's processing hit it.
    assert unfinished_at_cut > 0
    assert DB_ERROR.search(worker.log()), worker.log()[-3000:]
    # An e-mail whose claim the cut refused stays `queued` for the recovery task (beat runs it every
    # 15 s, for rows queued over 15 s): run it here, into the same mail directory, rather than wait.
    settings.EMAIL_BACKEND, settings.EMAIL_FILE_PATH = fault_env["EMAIL_BACKEND"], fault_env["EMAIL_FILE_PATH"]
    recovered = notification_emails_queued_deliver(older_than_seconds=0)
    # One window of e-mails may stay `sending`: a cut that lands on the claim's COMMIT leaves the client unsure
    # whether `queued → sending` committed, and at-most-once means it is never sent on a guess.
    counts = invariants_check(expected_events=N, mail_dir=tmp_path / "mail", sending_windows=1)
    assert counts["status_processed"] == N, worker.log()[-3000:]
    assert counts["entitlements"] == 2 * N
    assert counts["emails_queued"] == 0
    assert counts["emails_sent"] + counts["emails_stuck_sending"] == N
    assert counts["mail_messages"] == counts["emails_sent"] + counts["ambiguous_that_left"]
    print(f"database outage: {unfinished_at_cut} events unfinished at the cut, {recovered} queued e-mails recovered")
