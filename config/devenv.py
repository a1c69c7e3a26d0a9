"""Write the development .env with freshly generated keys (`make run`).

A new checkout gets the whole file; an existing one gets only the keys it lacks appended (a key added
by a later version of payhook), so a developer's `make run` never stops on a missing setting and
never has a key it already uses replaced (that would make its encrypted rows unreadable). Only values
that an older version chose for the developer, and that are now wrong (SUPERSEDED: the console mail
backend, which printed recipients into the worker's log), are replaced.
"""

import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

HEADER = "# Generated for local development by `make run`. Never use these values in production."
DEV_EMAIL_BACKEND = "config.mail.FileEmailBackend"
# Values an older `make run` wrote and a newer one replaces: they are choices of ours, not keys in use.
# The console backend printed every receipt, recipient address included, into the worker's log.
SUPERSEDED = {
    "EMAIL_BACKEND": {
        "django.core.mail.backends.console.EmailBackend",
        "django.core.mail.backends.filebased.EmailBackend",
    },
}


def dev_settings() -> dict[str, str]:
    # DEBUG stays off (the settings default): its error pages list local variables. Opt in with DJANGO_DEBUG=true.
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(32),
        "AUDIT_CHAIN_KEY": secrets.token_urlsafe(32),
        # Files under var/mail/, one log line naming the file: a recipient's address never lands on the terminal.
        "EMAIL_BACKEND": DEV_EMAIL_BACKEND,
        "WEBHOOK_SWEEP_INTERVAL_SECONDS": "5",
        # No start-up banners from the worker and beat (Celery reads CELERY_QUIET as its --quiet):
        # every line they write is a JSON log line (docs/logging.md).
        "CELERY_QUIET": "1",
    }


def dotenv_complete(path: Path) -> list[str]:
    """Create `path`, or append the settings it lacks and replace the values an older version wrote
    (SUPERSEDED); returns the names written."""
    existing = path.read_text() if path.exists() else ""
    updated, replaced = _superseded_replace(existing)
    if replaced:
        path.write_text(updated)
        existing = updated
    present = {line.partition("=")[0].strip() for line in existing.splitlines() if "=" in line and not line.startswith("#")}
    missing = {name: value for name, value in dev_settings().items() if name not in present}
    if missing:
        lines = ([] if existing else [HEADER]) + [f"{name}={value}" for name, value in missing.items()]
        prefix = "" if not existing or existing.endswith("\n") else "\n"
        with path.open("a") as file:
            file.write(prefix + "\n".join(lines) + "\n")
    return replaced + list(missing)


def _superseded_replace(text: str) -> tuple[str, list[str]]:
    """`text` with each superseded `NAME=value` line set to today's value, and the names replaced."""
    current = {"EMAIL_BACKEND": DEV_EMAIL_BACKEND}
    lines, replaced = [], []
    for line in text.splitlines(keepends=True):
        name, sep, value = line.partition("=")
        name = name.strip()
        if sep and not name.startswith("#") and value.strip() in SUPERSEDED.get(name, ()):
            line = f"{name}={current[name]}" + ("\n" if line.endswith("\n") else "")
            replaced.append(name)
        lines.append(line)
    return "".join(lines), replaced


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".env")
    written = dotenv_complete(target)
    if written:
        print(f"wrote {', '.join(written)} to {target} (generated development keys)")
