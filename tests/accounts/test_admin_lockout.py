import pytest
from django.contrib.auth.models import User

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct-horse-battery-9"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_hasher(settings):
    # Each attempt checks a password; the production hasher would make this file take a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(fast_hasher):
    return User.objects.create_user("olivia", password=PASSWORD, is_staff=True, is_superuser=True)


def _login(client, password, *, address="127.0.0.1", **headers):
    return client.post(LOGIN, {"username": "olivia", "password": password}, REMOTE_ADDR=address, headers=headers)


def _logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_25_wrong_passwords_then_the_right_one_is_refused(client, staff):
    for attempt in range(25):
        assert not _logged_in(_login(client, f"guess-{attempt}"))

    response = _login(client, PASSWORD)

    assert not _logged_in(response)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_few_wrong_passwords_then_the_right_one_logs_in(client, staff, settings):
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, f"guess-{attempt}")
    assert _logged_in(_login(client, PASSWORD))


def test_the_lockout_is_per_username_and_address(client, staff, settings):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"guess-{attempt}", address="203.0.113.7")
    assert _login(client, PASSWORD, address="203.0.113.7").status_code == 429
    # The same username from elsewhere is not locked out by someone else's guesses.
    assert _logged_in(_login(client, PASSWORD, address="198.51.100.9"))


def test_behind_a_trusted_proxy_the_lockout_follows_the_forwarded_client(client, staff, settings):
    settings.WEBHOOK_TRUSTED_PROXIES = ["10.0.0.0/8"]
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"guess-{attempt}", address="10.0.0.2", x_forwarded_for="203.0.113.7")
    assert _login(client, PASSWORD, address="10.0.0.2", x_forwarded_for="203.0.113.7").status_code == 429
    # Another client behind the same proxy is not locked out.
    assert _logged_in(_login(client, PASSWORD, address="10.0.0.2", x_forwarded_for="198.51.100.9"))


def test_the_lockout_ends_after_the_cool_off(client, staff, settings, time_machine):
    from datetime import timedelta

    from django.utils import timezone

    for attempt in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"guess-{attempt}")
    assert _login(client, PASSWORD).status_code == 429

    time_machine.move_to(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(seconds=1))
    assert _logged_in(_login(client, PASSWORD))


def test_failure_logs_name_neither_the_username_nor_the_address(client, staff, caplog):
    with caplog.at_level("DEBUG", logger="axes"):
        for attempt in range(6):
            _login(client, f"guess-{attempt}", address="203.0.113.7")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "AXES" in text  # axes did log
    assert "olivia" not in text and "203.0.113.7" not in text and "guess-" not in text
