"""`manage.py webhook_endpoint create | add-secret | remove-secret | list`."""

import base64
import secrets

import pytest

from config import encryption
from tests.webhooks.commands.webhook_endpoint_command import webhook_endpoint_error, webhook_endpoint_run
from webhooks.endpoints import endpoint_secrets_decrypted
from webhooks.models import EndpointSecret, WebhookEndpoint

pytestmark = pytest.mark.django_db


def _standard_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def test_create_makes_an_active_endpoint_with_its_first_secret(stripe_secret):
    output = webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)

    endpoint = WebhookEndpoint.objects.get(slug="shop")
    assert endpoint.scheme == "stripe"
    assert endpoint.is_active
    assert endpoint_secrets_decrypted(endpoint=endpoint) == [stripe_secret]
    assert "/webhooks/shop/" in output
    assert stripe_secret not in output


def test_create_accepts_a_standard_endpoint_with_an_ed25519_public_key(ed25519_keys):
    _, public_key = ed25519_keys

    webhook_endpoint_run("create", "acme", "--scheme", "standard", "--secret", public_key)

    row = EndpointSecret.objects.get(endpoint__slug="acme")
    assert row.kind == EndpointSecret.Kind.ED25519_PUBLIC_KEY


def test_the_secret_is_encrypted_at_rest(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)

    row = EndpointSecret.objects.get(endpoint__slug="shop")
    stored = bytes(row.value_encrypted)
    assert stripe_secret.encode() not in stored
    assert stripe_secret.removeprefix("whsec_").encode() not in stored
    assert encryption.decrypt(stored) == stripe_secret.encode()
    assert stripe_secret not in row.fingerprint + row.hint


def test_add_secret_keeps_the_old_secret_active_beside_the_new_one(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)
    new_secret = f"whsec_{secrets.token_hex(16)}"

    output = webhook_endpoint_run("add-secret", "shop", "--secret", new_secret)

    active = endpoint_secrets_decrypted(endpoint=WebhookEndpoint.objects.get(slug="shop"))
    assert sorted(active) == sorted([stripe_secret, new_secret])
    assert new_secret not in output


def test_remove_secret_deactivates_only_that_secret(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)
    new_secret = f"whsec_{secrets.token_hex(16)}"
    webhook_endpoint_run("add-secret", "shop", "--secret", new_secret)

    output = webhook_endpoint_run("remove-secret", "shop", "--secret", stripe_secret)

    assert endpoint_secrets_decrypted(endpoint=WebhookEndpoint.objects.get(slug="shop")) == [new_secret]
    assert stripe_secret not in output


def test_list_shows_endpoints_and_secret_fingerprints_but_never_a_secret(stripe_secret):
    standard_secret = _standard_secret()
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)
    webhook_endpoint_run("create", "acme", "--scheme", "standard", "--secret", standard_secret)
    WebhookEndpoint.objects.filter(slug="acme").update(is_active=False)

    output = webhook_endpoint_run("list")

    lines = output.splitlines()
    assert any(line.startswith("shop\tstripe\tactive") for line in lines)
    assert any(line.startswith("acme\tstandard\tinactive") for line in lines)
    for row in EndpointSecret.objects.all():
        assert row.fingerprint in output
    for secret in (stripe_secret, standard_secret):
        assert secret not in output
        assert secret.removeprefix("whsec_")[:8] not in output


def test_list_says_so_when_there_are_no_endpoints():
    assert webhook_endpoint_run("list").strip() == "no endpoints"


def test_an_unknown_slug_is_a_one_line_error(stripe_secret):
    message = webhook_endpoint_error("add-secret", "nope", "--secret", stripe_secret)

    assert "nope" in message
    assert stripe_secret not in message


def test_removing_from_an_unknown_slug_is_a_one_line_error(stripe_secret):
    webhook_endpoint_error("remove-secret", "nope", "--secret", stripe_secret)


def test_an_unknown_scheme_is_a_one_line_error(stripe_secret):
    message = webhook_endpoint_error("create", "shop", "--scheme", "worldpay", "--secret", stripe_secret)

    assert "worldpay" in message and "adyen" in message, "names the schemes it knows"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("scheme", "secret"),
    [
        ("stripe", "sk_live_not_a_webhook_secret"),
        ("stripe", "whsec_short"),
        ("standard", "whsec_!!!not-base64!!!"),
        ("standard", "whsec_" + base64.b64encode(b"too short").decode()),
        ("standard", "whpk_" + base64.b64encode(b"not 32 bytes").decode()),
        ("standard", "plain-text-secret-without-prefix"),
    ],
)
def test_a_secret_in_the_wrong_format_is_a_one_line_error_that_does_not_echo_it(scheme, secret):
    message = webhook_endpoint_error("create", "shop", "--scheme", scheme, "--secret", secret)

    assert secret not in message
    assert not WebhookEndpoint.objects.exists()
    assert not EndpointSecret.objects.exists()


def test_adding_a_secret_in_the_wrong_format_leaves_the_endpoint_as_it_was(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)

    webhook_endpoint_error("add-secret", "shop", "--secret", "not-a-secret")

    assert EndpointSecret.objects.count() == 1


def test_adding_a_secret_that_is_already_active_is_a_one_line_error(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)

    message = webhook_endpoint_error("add-secret", "shop", "--secret", stripe_secret)

    assert stripe_secret not in message
    assert EndpointSecret.objects.count() == 1


def test_creating_an_existing_slug_again_is_a_one_line_error(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)

    webhook_endpoint_error("create", "shop", "--scheme", "stripe", "--secret", f"whsec_{secrets.token_hex(16)}")

    assert EndpointSecret.objects.count() == 1


def test_removing_a_secret_the_endpoint_does_not_have_is_a_one_line_error(stripe_secret):
    webhook_endpoint_run("create", "shop", "--scheme", "stripe", "--secret", stripe_secret)
    unknown = f"whsec_{secrets.token_hex(16)}"

    message = webhook_endpoint_error("remove-secret", "shop", "--secret", unknown)

    assert unknown not in message
    assert EndpointSecret.objects.count() == 1


def test_a_missing_action_is_a_one_line_error():
    webhook_endpoint_error()
