"""Prometheus metrics: every payhook metric, and the exposition `/metrics` serves (docs/metrics.md).

One module every layer may import (config is the base), so metrics are observed where things
happen. Two kinds:

- Per-process counters and histograms below. With `PROMETHEUS_MULTIPROC_DIR` set (`make run`,
  docker-compose.yml) each process writes its values to files in that directory and a scrape sums
  them over every gunicorn and Celery process, alive or dead; without it (tests' in-process client,
  a single process) they live in the process's own registry.
- Gauges that describe the database (backlog, oldest unfinished event, open dead letters,
  unprovisioned payments) are not kept per process: a collector registered with
  `scrape_collector_register()` computes them from the database at each scrape (webhooks/monitoring.py).

Labels are bounded and never personal: endpoint slugs, outcomes, reasons, task names, providers.
"""

import logging
import os
import socket

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.registry import REGISTRY

logger = logging.getLogger(__name__)

_HOST = socket.gethostname().replace("_", "-")


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def process_identifier() -> str:
    """This process's name in the multiprocess directory's file names: `host-pid`.

    The host part keeps apart processes of different containers that share the directory through a
    volume (docker-compose.yml: web and worker), where the same pid is common. No `_`: the client
    splits file names on it."""
    return f"{_HOST}-{os.getpid()}"


if multiprocess_dir():
    # The directory must exist before anything counts (a process started alone: `make run` creates
    # and empties it first). The value class is read when a metric is made, so it is chosen first.
    os.makedirs(multiprocess_dir(), exist_ok=True)
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)


def process_dead_mark(pid: int) -> None:
    """Bookkeeping for a process that exited (gunicorn `child_exit`, Celery `worker_process_shutdown`).

    Its counters and histograms stay in the directory (a counter never goes backwards); only live
    gauges' files would go, and payhook keeps none per process."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(f"{_HOST}-{pid}")


# --- Ingestion (webhooks/receiving.py, webhooks/throttling.py) ------------------------------------------

webhook_events = Counter(
    "payhook_webhook_events_total", "Verified deliveries by outcome (accepted, duplicate, conflict).",
    ["endpoint", "outcome"],
)
webhook_refused = Counter(
    "payhook_webhook_refused_total",
    "Deliveries refused before storage, by reason (signature errors, rate_limited, forbidden_source).",
    ["endpoint", "reason"],
)

# --- Processing (webhooks/tasks.py) --------------------------------------------------------------------

event_processing_seconds = Histogram(
    "payhook_event_processing_seconds",
    "Time to process one stored event in a worker (claim, canonical events, fulfilment, commit), by final status.",
    ["status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
task_retries = Counter(
    "payhook_task_retries_total", "Work a task put back to be retried later (transient errors), by task.", ["task"]
)

# --- Fulfilment (fulfillment/services.py) --------------------------------------------------------------

# From the provider's payment time (the canonical event's `time`) to the commit that made the
# entitlement active: what the buyer waited. 300 s is the default PROVISIONING_SLO_SECONDS.
PAYMENT_TO_ENTITLEMENT_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400)
payment_to_entitlement_seconds = Histogram(
    "payhook_payment_to_entitlement_seconds",
    "Provider payment time to entitlement granted (after commit), by provider.",
    ["provider"],
    buckets=PAYMENT_TO_ENTITLEMENT_BUCKETS,
)

# --- Operator actions (webhooks/deadletters.py: admin, API, replay_events) -----------------------------

replays = Counter(
    "payhook_replays_total",
    "Events put back through processing by an operator: kind=dead_letter (DLQ replay) or reprocess (admin, replay_events).",
    ["kind"],
)

# Series that may stay at zero for weeks are created now, so that they exist (at 0) in every scrape:
# an alert on their rate then sees the first increment, and a dashboard shows 0 rather than nothing.
task_retries.labels(task="webhooks.tasks.webhook_events_process")
for _kind in ("dead_letter", "reprocess"):
    replays.labels(kind=_kind)

# The names other modules used before this module existed (webhooks/metrics.py re-exports them).
events_received = webhook_events
signature_failures = webhook_refused
refused = webhook_refused


# --- Exposition ------------------------------------------------------------------------------------------

# Collectors computed at scrape (database gauges), apart from the per-process registry.
_scrape_registry = CollectorRegistry(auto_describe=False)


def scrape_collector_register(collector) -> None:
    """Add a collector whose `collect()` runs at every scrape, in the scraping web process."""
    _scrape_registry.register(collector)


def scrape_collector_unregister(collector) -> None:
    _scrape_registry.unregister(collector)


def metrics_exposition() -> bytes:
    """The text `/metrics` answers: per-process metrics summed over every process (multiprocess
    mode) or this process's registry, then the gauges computed from the database now."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_scrape_registry)
