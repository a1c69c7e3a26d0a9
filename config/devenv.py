"""Write the development .env with freshly generated keys (`make run`).

A new checkout gets the whole file; an existing one gets only the keys it lacks appended (a key added
by a later version of payhook), so a developer's `make run` never stops on a missing setting and
never has a key it already uses replaced (that would make its encrypted rows unreadable).
"""

import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

HEADER = "# Generated for local development by `make run`. Never use these values in production."


def dev_settings() -> dict[str, str]:
    # DEBUG stays off (the settings default): its error pages list local variables. Opt in with DJANGO_DEBUG=true.
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(32),
        "AUDIT_CHAIN_KEY": secrets.token_urlsafe(32),
        # Files under var/mail/: a recipient's address never lands on the terminal.
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "WEBHOOK_SWEEP_INTERVAL_SECONDS": "5",
    }


def dotenv_complete(path: Path) -> list[str]:
    """Create `path`, or append the settings it lacks; returns the names written."""
    existing = path.read_text() if path.exists() else ""
    present = {line.partition("=")[0].strip() for line in existing.splitlines() if "=" in line and not line.startswith("#")}
    missing = {name: value for name, value in dev_settings().items() if name not in present}
    if missing:
        lines = ([] if existing else [HEADER]) + [f"{name}={value}" for name, value in missing.items()]
        prefix = "" if not existing or existing.endswith("\n") else "\n"
        with path.open("a") as file:
            file.write(prefix + "\n".join(lines) + "\n")
    return list(missing)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".env")
    written = dotenv_complete(target)
    if written:
        print(f"wrote {', '.join(written)} to {target} (generated development keys)")
