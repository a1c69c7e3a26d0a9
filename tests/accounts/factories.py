from datetime import timedelta

from accounts.services import api_token_create


def token_key_for(user, *, expires_in: timedelta = timedelta(days=3650)) -> str:
    """A real API key for `user`, as `manage.py drf_create_token` issues one (long-lived: some tests
    travel in time)."""
    return api_token_create(user=user, expires_in=expires_in).key
