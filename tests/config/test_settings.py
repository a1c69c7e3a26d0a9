"""Configuration invariants that a change of one number could silently break."""

import random

import yaml
from django.conf import settings

from config.celery_app import app
from webhooks.tasks import retry_delay


def test_retry_backoff_always_stays_below_the_brokers_visibility_timeout():
    random.seed(1)
    worst = max(retry_delay(attempt) for attempt in range(1, 50) for _ in range(50))

    assert worst < settings.CELERY_BROKER_VISIBILITY_TIMEOUT
    assert worst <= settings.CELERY_RETRY_BACKOFF_MAX_SECONDS


def test_retry_backoff_grows_with_the_attempt_number():
    random.seed(2)
    early = max(retry_delay(1) for _ in range(200))
    later = max(retry_delay(6) for _ in range(200))

    assert early <= 2 < later


def test_backoff_cap_stays_below_visibility_timeout_even_if_misconfigured(settings):
    settings.CELERY_RETRY_BACKOFF_MAX_SECONDS = 10 * settings.CELERY_BROKER_VISIBILITY_TIMEOUT

    assert max(retry_delay(40) for _ in range(200)) < settings.CELERY_BROKER_VISIBILITY_TIMEOUT


def test_celery_runs_at_least_once_with_one_message_per_worker_process():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == settings.CELERY_BROKER_VISIBILITY_TIMEOUT


def test_docker_compose_describes_the_production_topology():
    with open(settings.BASE_DIR / "docker-compose.yml") as fh:
        compose = yaml.safe_load(fh)

    services = compose["services"]
    assert set(services) == {"proxy", "postgres", "redis", "migrate", "web", "worker", "beat"}
    assert "gunicorn" in " ".join(services["web"]["command"])
    assert services["worker"]["command"][:4] == ["celery", "-A", "config", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
        assert {"DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "BLIND_INDEX_KEY"} <= set(env)
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "--appendonly" in services["redis"]["command"]


def test_procfile_names_web_worker_and_beat():
    lines = dict(line.split(":", 1) for line in (settings.BASE_DIR / "Procfile").read_text().splitlines() if line.strip())

    assert set(lines) == {"web", "worker", "beat"}
    assert lines["web"].strip().startswith("gunicorn config.wsgi:application")
    assert "celery -A config worker" in lines["worker"]
    assert "celery -A config beat" in lines["beat"]


def test_every_setting_read_from_the_environment_is_documented_in_env_example():
    import re

    source = (settings.BASE_DIR / "config" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"', source))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (settings.BASE_DIR / ".env.example").read_text(), re.M))

    assert read - documented == set()
