import pytest

from tests.support.processes import process_env


@pytest.fixture
def worker_env(test_database_url, broker_url):
    """Environment for a real gunicorn or worker process on the test database (as tests/integration)."""
    return process_env(test_database_url, broker_url)
