import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from providers import SCHEMES
from webhooks.endpoints import (
    endpoint_secret_add,
    endpoint_secret_remove,
    secret_expiry_parse,
    webhook_endpoint_create,
    webhook_endpoint_get,
    webhook_endpoint_update,
)
from webhooks.exceptions import WebhookError
from webhooks.models import WebhookEndpoint


def _secret_arguments(parser) -> None:
    # A secret on the command line lands in `ps` and shell history: `-` and --secret-file avoid that.
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--secret", help="the secret, or - to read it from standard input")
    source.add_argument("--secret-file", metavar="PATH", help="read the secret from this file")


class Command(BaseCommand):
    help = "Create webhook endpoints and rotate their secrets; `list` never prints a secret."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create an endpoint with its first secret")
        create.add_argument("slug")
        create.add_argument("--scheme", required=True, choices=sorted(SCHEMES))
        _secret_arguments(create)
        create.add_argument("--description", default="")
        create.add_argument("--mode", choices=["live", "test"], default="live", help="Stripe livemode this endpoint fulfils")
        create.add_argument(
            "--allow-ip", action="append", default=[], metavar="CIDR", help="accept deliveries only from here (repeatable)"
        )
        sources = sub.add_parser("set-sources", help="replace the endpoint's IP allowlist; none given: any address")
        sources.add_argument("slug")
        sources.add_argument("--allow-ip", action="append", default=[], metavar="CIDR")
        add = sub.add_parser("add-secret", help="add a secret; old and new both verify")
        add.add_argument("slug")
        _secret_arguments(add)
        add.add_argument(
            "--expire-others-in", metavar="DURATION",
            help="roll: the other secrets stop verifying after this long (e.g. 24h, 30m, 7d; 0 = now)",
        )
        remove = sub.add_parser("remove-secret", help="remove a secret; it stops verifying")
        remove.add_argument("slug")
        _secret_arguments(remove)
        sub.add_parser("list", help="list endpoints with secret fingerprints and expiry")

    def handle(self, *args, action, **options):
        try:
            if action == "create":
                endpoint = webhook_endpoint_create(
                    slug=options["slug"], scheme=options["scheme"], secret=self._secret(options),
                    description=options["description"],
                    mode=options["mode"], allowed_sources=options["allow_ip"], source="command webhook_endpoint create",
                )
                self.stdout.write(f"created endpoint {endpoint.slug} ({endpoint.scheme}): POST /webhooks/{endpoint.slug}/")
            elif action == "set-sources":
                endpoint = webhook_endpoint_get(slug=options["slug"])
                webhook_endpoint_update(  # audited as endpoint.changed
                    endpoint=endpoint, allowed_sources=options["allow_ip"], actor="system",
                    source="command webhook_endpoint set-sources",
                )
                self.stdout.write(f"{endpoint.slug} accepts deliveries from {', '.join(endpoint.allowed_sources) or 'any address'}")
            elif action == "add-secret":
                expire = options["expire_others_in"]
                expire_in = secret_expiry_parse(expire) if expire is not None else None
                row = endpoint_secret_add(
                    endpoint=webhook_endpoint_get(slug=options["slug"]), secret=self._secret(options),
                    expire_others_in=expire_in, source="command webhook_endpoint add-secret",
                )
                self.stdout.write(f"added secret {row.fingerprint} to {options['slug']}")
                if expire_in is not None:
                    self.stdout.write(f"the other secrets expire at {(timezone.now() + expire_in).isoformat(timespec='seconds')}")
            elif action == "remove-secret":
                row = endpoint_secret_remove(
                    endpoint=webhook_endpoint_get(slug=options["slug"]), secret=self._secret(options),
                    source="command webhook_endpoint remove-secret",
                )
                self.stdout.write(f"removed secret {row.fingerprint} from {options['slug']}")
            else:
                self._list()
        except WebhookError as exc:
            raise CommandError(exc.message) from None

    def _secret(self, options) -> str:
        """The secret from --secret, standard input (`--secret -`) or --secret-file, without one
        trailing newline. Error messages never include what was read."""
        if options["secret_file"] is not None:
            try:
                with open(options["secret_file"], "rb") as file:
                    raw = file.read(64 * 1024)
            except OSError as exc:
                raise CommandError(f"cannot read --secret-file: {exc.strerror or type(exc).__name__}") from None
            origin = "--secret-file"
        elif options["secret"] == "-":
            raw = sys.stdin.buffer.read(64 * 1024) if hasattr(sys.stdin, "buffer") else sys.stdin.read(64 * 1024).encode()
            origin = "standard input"
        else:
            return options["secret"]
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise CommandError(f"the secret from {origin} is not UTF-8 text") from None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            raise CommandError(f"no secret on {origin}")
        if any(char in text for char in "\r\n"):
            raise CommandError(f"the secret from {origin} spans several lines")
        return text

    def _list(self):
        endpoints = WebhookEndpoint.objects.prefetch_related("secrets")
        if not endpoints:
            self.stdout.write("no endpoints")
        now = timezone.now()
        for endpoint in endpoints:
            state = "active" if endpoint.is_active else "inactive"
            count = len(endpoint.secrets.all())
            self.stdout.write(f"{endpoint.slug}\t{endpoint.scheme}\t{state}\tsecrets: {count or 'none'}")
            for row in endpoint.secrets.all():
                if row.expires_at is None:
                    expiry = "expires never"
                else:
                    verb = "expired" if row.expires_at <= now else "expires"
                    expiry = f"{verb} {row.expires_at.isoformat(timespec='seconds')}"
                created = row.created_at.isoformat(timespec="seconds")
                self.stdout.write(f"  {row.hint}…{row.fingerprint}\t{row.kind}\tcreated {created}\t{expiry}")
