"""`webhook_endpoint`: secrets from stdin or a file, rolls with `--expire-others-in`, expiry in `list`."""

import io
import secrets
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from tests.webhooks.commands.webhook_endpoint_command import webhook_endpoint_error, webhook_endpoint_run
from webhooks.endpoints import endpoint_secrets_decrypted
from webhooks.models import EndpointSecret, WebhookEndpoint

pytestmark = pytest.mark.django_db


def _new_secret() -> str:
    return f"whsec_{secrets.token_hex(16)}"


@pytest.fixture
def stdin(monkeypatch):
    def feed(data: bytes):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    return feed


@pytest.fixture
def shop(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)
    return WebhookEndpoint.objects.get(slug="shop")


def test_create_reads_the_secret_from_standard_input(stdin, stripe_secret):
    stdin(stripe_secret.encode() + b"\n")

    output = webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", "-")

    assert endpoint_secrets_decrypted(endpoint=WebhookEndpoint.objects.get(slug="shop")) == [stripe_secret]
    assert stripe_secret not in output


def test_add_secret_reads_the_secret_from_a_file_without_its_trailing_newline(shop, stripe_secret, tmp_path):
    new = _new_secret()
    path = tmp_path / "secret"
    path.write_bytes(new.encode() + b"\r\n")

    webhook_endpoint_run("add-secret", "shop", "--secret-file", str(path))

    assert sorted(endpoint_secrets_decrypted(endpoint=shop)) == sorted([stripe_secret, new])


def test_remove_secret_reads_the_secret_from_standard_input(shop, stripe_secret, stdin):
    new = _new_secret()
    webhook_endpoint_run("add-secret", "shop", "--secret", new)
    stdin(stripe_secret.encode())

    output = webhook_endpoint_run("remove-secret", "shop", "--secret", "-")

    assert endpoint_secrets_decrypted(endpoint=shop) == [new]
    assert "removed secret" in output


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "no secret"), (b"\n", "no secret"), (b"whsec_aaaaaaaaaaaa\nwhsec_bbbbbbbbbbbb\n", "several lines"), (b"\xff\xfe", "UTF-8")],
)
def test_bad_standard_input_is_a_one_line_error_that_does_not_echo_it(shop, stdin, data, reason):
    stdin(data)

    message = webhook_endpoint_error("add-secret", "shop", "--secret", "-")

    assert reason in message
    assert "whsec_aaaa" not in message
    assert EndpointSecret.objects.count() == 1


def test_an_unreadable_secret_file_is_a_one_line_error(shop, tmp_path):
    message = webhook_endpoint_error("add-secret", "shop", "--secret-file", str(tmp_path / "missing"))

    assert "--secret-file" in message


def test_a_secret_file_with_an_invalid_secret_does_not_echo_it(shop, tmp_path):
    path = tmp_path / "secret"
    path.write_text("not-a-stripe-secret-value\n")

    message = webhook_endpoint_error("add-secret", "shop", "--secret-file", str(path))

    assert "not-a-stripe-secret-value" not in message


def test_exactly_one_secret_source_is_required(shop, tmp_path, stripe_secret):
    path = tmp_path / "secret"
    path.write_text(_new_secret())

    webhook_endpoint_error("add-secret", "shop")
    webhook_endpoint_error("add-secret", "shop", "--secret", _new_secret(), "--secret-file", str(path))


def test_expire_others_in_rolls_the_secret(shop, stripe_secret):
    new = _new_secret()

    output = webhook_endpoint_run("add-secret", "shop", "--secret", new, "--expire-others-in", "24h")

    old_row = EndpointSecret.objects.filter(endpoint=shop).exclude(expires_at=None).get()
    assert timedelta(hours=23, minutes=59) < old_row.expires_at - timezone.now() <= timedelta(hours=24)
    assert EndpointSecret.objects.filter(endpoint=shop, expires_at=None).count() == 1
    assert "expire at" in output
    entry = AuditEntry.objects.filter(action="endpoint.secret_added").order_by("-id").first()
    assert entry.data["expiring_key_fingerprints"] == [old_row.fingerprint]
    assert entry.data["source"] == "command webhook_endpoint add-secret"


def test_a_bad_duration_is_a_one_line_error_and_adds_nothing(shop):
    message = webhook_endpoint_error("add-secret", "shop", "--secret", _new_secret(), "--expire-others-in", "tomorrow")

    assert "duration" in message
    assert EndpointSecret.objects.filter(endpoint=shop).count() == 1


def test_list_shows_each_secrets_fingerprint_kind_creation_and_expiry(shop, stripe_secret):
    webhook_endpoint_run("add-secret", "shop", "--secret", _new_secret(), "--expire-others-in", "0")

    output = webhook_endpoint_run("list")

    secret_lines = [line for line in output.splitlines() if line.startswith("  ")]
    assert len(secret_lines) == 2
    for row in EndpointSecret.objects.filter(endpoint=shop):
        line = next(line for line in secret_lines if row.fingerprint in line)
        assert "\thmac\t" in line
        assert f"created {row.created_at.isoformat(timespec='seconds')}" in line
        assert ("expires never" in line) == (row.expires_at is None)
        if row.expires_at is not None:
            assert f"expired {row.expires_at.isoformat(timespec='seconds')}" in line
    assert stripe_secret not in output


def test_commands_audit_as_system(shop, stripe_secret):
    new = _new_secret()
    webhook_endpoint_run("add-secret", "shop", "--secret", new)
    webhook_endpoint_run("remove-secret", "shop", "--secret", stripe_secret)

    actions = list(AuditEntry.objects.order_by("id").values_list("action", "actor"))
    assert actions == [
        ("endpoint.secret_added", "system"), ("endpoint.secret_added", "system"), ("endpoint.secret_removed", "system")
    ]


def test_after_a_blind_index_key_rotation_remove_secret_removes_the_right_row(shop, stripe_secret, settings):
    new = _new_secret()
    webhook_endpoint_run("add-secret", "shop", "--secret", new)
    old_row = EndpointSecret.objects.get(endpoint=shop, fingerprint=EndpointSecret.objects.order_by("created_at").first().fingerprint)
    settings.BLIND_INDEX_KEY = "rotated-blind-index-key"

    output = webhook_endpoint_run("remove-secret", "shop", "--secret", stripe_secret)

    assert not EndpointSecret.objects.filter(pk=old_row.pk).exists()
    assert endpoint_secrets_decrypted(endpoint=shop) == [new]
    assert old_row.fingerprint in output
