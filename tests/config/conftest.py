import pytest
from django.core import signals
from django.db import close_old_connections


@pytest.fixture
def in_test_transaction():
    """A WSGI handler called directly closes the database connection when a request ends, which would
    end the test's transaction; Django's own test client disconnects the same two receivers."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)
