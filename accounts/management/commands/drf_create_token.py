import argparse
import re
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.exceptions import UnknownUser
from accounts.services import api_token_create_for_username

_DURATION = re.compile(r"^\s*(\d+)\s*([dhm]?)\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "": "days"}


def _duration(value: str) -> timedelta:
    match = _DURATION.match(value)
    if not match or int(match[1]) == 0:
        raise CommandError(f"--expires-in takes a positive duration such as 90d, 12h or 30m, not {value!r}")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = "Create an API token for USER and print its key, once: only its digest is stored."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--expires-in", default=f"{settings.API_TOKEN_EXPIRES_DAYS}d",
            help="lifetime: 90d, 12h or 30m (default: API_TOKEN_EXPIRES_DAYS days)",
        )
        # DRF's command took -r to replace the user's token; tokens are no longer one per user, so
        # accepted and ignored: revoke old ones in the admin.
        parser.add_argument("-r", "--reset", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, username, expires_in, **options):
        try:
            issued = api_token_create_for_username(username=username, expires_in=_duration(expires_in))
        except UnknownUser as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"Token {issued.token.prefix}… for {username}, expires {issued.token.expires_at:%Y-%m-%d %H:%M} UTC. "
                          "Store it now: it cannot be shown again.")
        self.stdout.write(issued.key)

