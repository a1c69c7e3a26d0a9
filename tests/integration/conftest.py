import pytest

from tests.support.processes import process_env, worker_start


@pytest.fixture
def worker_env(test_database_url, broker_url):
    return process_env(test_database_url, broker_url, WEBHOOK_ENDPOINT_CACHE_SECONDS="0")


@pytest.fixture
def celery_worker_process(transactional_db, broker_flushed, worker_env, tmp_path):
    """One real Celery worker process (prefork, acks_late, prefetch 1) on the test database."""
    worker = worker_start(worker_env, tmp_path / "worker.log", concurrency=1)
    yield worker
    worker.stop()
