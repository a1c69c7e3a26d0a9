"""Where the contract's metrics are observed (config/metrics.py), and multiprocess aggregation."""

import json
import os
import runpy
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from celery.signals import worker_process_shutdown
from django.db import OperationalError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from config import devrun, metrics
from fulfillment.services import catalog_import
from providers.stripe import samples
from tests.conftest import signed_headers
from tests.deadletters.factories import dead_letter_create, event_create, staff_user_create
from tests.fulfillment.conftest import CATALOG
from webhooks import deadletters, tasks
from webhooks.models import DeadLetter, WebhookEvent
from webhooks.receiving import webhook_event_receive

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _paid_session(*, created: int) -> dict:
    event = samples.stripe_trigger_event("checkout.session.completed")
    event["created"] = created
    event["data"]["object"]["metadata"] = {"price_id": "price_pro"}
    return event


def _receive(stripe_secret, event: dict) -> str:
    body = json.dumps(event).encode()
    return webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", stripe_secret, body)).event_id


@pytest.mark.django_db
def test_payment_to_entitlement_is_observed_once_the_grant_commits_from_the_payment_time(
    stripe_endpoint, stripe_secret, django_capture_on_commit_callbacks
):
    catalog_import(data=CATALOG)
    event_id = _receive(stripe_secret, _paid_session(created=int(time.time()) - 90))
    count = _value("payhook_payment_to_entitlement_seconds_count", provider="stripe")
    under_60 = _value("payhook_payment_to_entitlement_seconds_bucket", provider="stripe", le="60.0")
    under_120 = _value("payhook_payment_to_entitlement_seconds_bucket", provider="stripe", le="120.0")
    processed = _value("payhook_event_processing_seconds_count", status="processed")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tasks.webhook_events_process([event_id])
        assert _value("payhook_payment_to_entitlement_seconds_count", provider="stripe") == count  # not before commit
    for callback in callbacks:
        callback()

    assert WebhookEvent.objects.get(id=event_id).status == "processed"
    assert _value("payhook_payment_to_entitlement_seconds_count", provider="stripe") == count + 1
    assert _value("payhook_payment_to_entitlement_seconds_bucket", provider="stripe", le="60.0") == under_60
    assert _value("payhook_payment_to_entitlement_seconds_bucket", provider="stripe", le="120.0") == under_120 + 1
    assert _value("payhook_event_processing_seconds_count", status="processed") == processed + 1


@pytest.mark.django_db
def test_a_redelivered_payment_grants_nothing_new_and_observes_nothing(
    stripe_endpoint, stripe_secret, django_capture_on_commit_callbacks
):
    catalog_import(data=CATALOG)
    first = _receive(stripe_secret, _paid_session(created=int(time.time()) - 10))
    again = _paid_session(created=int(time.time()) - 10)  # another event for the same payment
    second = _receive(stripe_secret, again)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.webhook_events_process([first])
    count = _value("payhook_payment_to_entitlement_seconds_count", provider="stripe")

    with django_capture_on_commit_callbacks(execute=True):
        tasks.webhook_events_process([second])

    assert WebhookEvent.objects.get(id=second).status == "processed"
    assert _value("payhook_payment_to_entitlement_seconds_count", provider="stripe") == count


@pytest.mark.django_db
def test_a_transient_failure_counts_a_retry_and_its_processing_time(stripe_endpoint, stripe_secret, monkeypatch):
    event_id = _receive(stripe_secret, samples.stripe_event("customer.created"))
    retries = _value("payhook_task_retries_total", task="webhooks.tasks.webhook_events_process")
    timed = _value("payhook_event_processing_seconds_count", status="retry")

    def blink(*, event_id):
        raise OperationalError("the database blinked")

    monkeypatch.setattr(tasks.processing, "webhook_event_process", blink)
    monkeypatch.setattr(tasks, "webhook_event_retry_publish", lambda **kwargs: None)
    tasks.webhook_events_process([event_id])

    assert _value("payhook_task_retries_total", task="webhooks.tasks.webhook_events_process") == retries + 1
    assert _value("payhook_event_processing_seconds_count", status="retry") == timed + 1


@pytest.mark.django_db
def test_replays_count_dead_letters_replayed_and_events_reprocessed(
    stripe_endpoint, broker_flushed, django_capture_on_commit_callbacks
):
    operator = staff_user_create("otto-operator", "operators")
    dead = [dead_letter_create(endpoint=stripe_endpoint) for _ in range(2)]
    finished = [event_create(endpoint=stripe_endpoint) for _ in range(3)]
    replayed = _value("payhook_replays_total", kind="dead_letter")
    reprocessed = _value("payhook_replays_total", kind="reprocess")

    with django_capture_on_commit_callbacks(execute=True):
        deadletters.dead_letter_replay_bulk(queryset=DeadLetter.objects.filter(id__in=[d.id for d in dead]), user=operator)
    with django_capture_on_commit_callbacks(execute=True):
        deadletters.webhook_events_reprocess_bulk(
            queryset=WebhookEvent.objects.filter(id__in=[e.id for e in finished]), user=None, via="replay_events"
        )

    assert _value("payhook_replays_total", kind="dead_letter") == replayed + 2
    assert _value("payhook_replays_total", kind="reprocess") == reprocessed + 3


def test_the_process_identifier_names_host_and_pid_without_the_separator_the_client_splits_on():
    identifier = metrics.process_identifier()

    assert identifier.endswith(f"-{os.getpid()}") and "_" not in identifier


def test_make_run_empties_the_metrics_directory_of_the_last_run(tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_host-123.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")

    devrun.metrics_dir_reset(str(directory))
    devrun.metrics_dir_reset(str(tmp_path / "fresh"))

    assert [p.name for p in directory.iterdir()] == ["keep.txt"]
    assert (tmp_path / "fresh").is_dir()


COUNT_IN_A_PROCESS = """
import sys
from config import metrics
for _ in range(int(sys.argv[1])):
    metrics.webhook_events.labels(endpoint="shop", outcome="accepted").inc()
metrics.payment_to_entitlement_seconds.labels(provider="stripe").observe(float(sys.argv[2]))
"""

SCRAPE = "import sys; from config import metrics; sys.stdout.write(metrics.metrics_exposition().decode())"


def test_multiprocess_mode_sums_every_process_that_ever_counted(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count, seconds in ((3, 4.0), (5, 400.0)):
        subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS, str(count), str(seconds)], env=env, cwd=ROOT, check=True)

    text = subprocess.run([sys.executable, "-c", SCRAPE], env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout

    samples_ = {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples_[("payhook_webhook_events_total", (("endpoint", "shop"), ("outcome", "accepted")))] == 8
    assert samples_[("payhook_payment_to_entitlement_seconds_count", (("provider", "stripe"),))] == 2
    assert samples_[("payhook_payment_to_entitlement_seconds_bucket", (("le", "5.0"), ("provider", "stripe")))] == 1
    assert samples_[("payhook_payment_to_entitlement_seconds_bucket", (("le", "600.0"), ("provider", "stripe")))] == 2
    # Series no process has counted yet are there, at zero, from the start.
    assert samples_[("payhook_replays_total", (("kind", "dead_letter"),))] == 0
    assert samples_[("payhook_task_retries_total", (("task", "webhooks.tasks.webhook_events_process"),))] == 0


def test_an_exited_web_or_worker_process_is_marked_dead_under_its_file_name(monkeypatch, tmp_path):
    marked = []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(metrics.multiprocess, "mark_process_dead", lambda identifier: marked.append(identifier))
    gunicorn_config = runpy.run_path(os.path.join(ROOT, "config", "gunicorn.py"))

    gunicorn_config["child_exit"](None, SimpleNamespace(pid=4242))
    worker_process_shutdown.send(sender=None, pid=4343, exitcode=0)

    host = metrics.process_identifier().rsplit("-", 1)[0]
    assert marked == [f"{host}-4242", f"{host}-4343"]
