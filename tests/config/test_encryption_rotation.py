import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from config import encryption
from webhooks.endpoints import endpoint_secrets_decrypted
from webhooks.models import EndpointSecret


@pytest.fixture
def rotated_keys(settings):
    old = list(settings.FIELD_ENCRYPTION_KEYS)
    new = Fernet.generate_key().decode()
    yield old, new
    settings.FIELD_ENCRYPTION_KEYS = old
    encryption.reset_cache()


@pytest.mark.django_db
def test_rotation_re_encrypts_under_the_new_key_so_the_old_one_can_go(settings, rotated_keys, stripe_endpoint, stripe_secret):
    old, new = rotated_keys
    settings.FIELD_ENCRYPTION_KEYS = [new, *old]
    encryption.reset_cache()

    call_command("rotate_encryption_keys")

    settings.FIELD_ENCRYPTION_KEYS = [new]
    encryption.reset_cache()
    stripe_endpoint.refresh_from_db()
    assert endpoint_secrets_decrypted(endpoint=stripe_endpoint) == [stripe_secret]
    token = bytes(EndpointSecret.objects.get().value_encrypted)
    assert Fernet(new.encode()).decrypt(token) == stripe_secret.encode()
