"""Print a development .env with freshly generated keys (`make run` writes it once)."""

import secrets

from cryptography.fernet import Fernet

print("# Generated for local development by `make run`. Never use these values in production.")
# DEBUG stays off (the settings default): its error pages list local variables. Opt in with DJANGO_DEBUG=true.
print(f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}")
print(f"FIELD_ENCRYPTION_KEYS={Fernet.generate_key().decode()}")
print(f"BLIND_INDEX_KEY={secrets.token_urlsafe(32)}")
print(f"AUDIT_CHAIN_KEY={secrets.token_urlsafe(32)}")
print("EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend")  # files under var/mail/: no address on the terminal
print("WEBHOOK_SWEEP_INTERVAL_SECONDS=5")
