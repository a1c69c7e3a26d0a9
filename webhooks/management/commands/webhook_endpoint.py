from django.core.management.base import BaseCommand, CommandError

from webhooks.exceptions import WebhookError
from webhooks.models import WebhookEndpoint
from webhooks.schemes import SCHEMES
from webhooks.services import endpoint_secret_add, endpoint_secret_remove, webhook_endpoint_create, webhook_endpoint_get
from webhooks.throttling import webhook_endpoint_sources_set


class Command(BaseCommand):
    help = "Create webhook endpoints and rotate their secrets; `list` never prints a secret."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create an endpoint with its first secret")
        create.add_argument("slug")
        create.add_argument("--scheme", required=True, choices=sorted(SCHEMES))
        create.add_argument("--secret", required=True)
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
        add.add_argument("--secret", required=True)
        remove = sub.add_parser("remove-secret", help="remove a secret; it stops verifying")
        remove.add_argument("slug")
        remove.add_argument("--secret", required=True)
        sub.add_parser("list", help="list endpoints with secret fingerprints")

    def handle(self, *args, action, **options):
        try:
            if action == "create":
                endpoint = webhook_endpoint_create(
                    slug=options["slug"], scheme=options["scheme"], secret=options["secret"], description=options["description"],
                    mode=options["mode"], allowed_sources=options["allow_ip"],
                )
                self.stdout.write(f"created endpoint {endpoint.slug} ({endpoint.scheme}): POST /webhooks/{endpoint.slug}/")
            elif action == "set-sources":
                endpoint = webhook_endpoint_sources_set(
                    endpoint=webhook_endpoint_get(slug=options["slug"]), allowed_sources=options["allow_ip"]
                )
                self.stdout.write(f"{endpoint.slug} accepts deliveries from {', '.join(endpoint.allowed_sources) or 'any address'}")
            elif action == "add-secret":
                row = endpoint_secret_add(endpoint=webhook_endpoint_get(slug=options["slug"]), secret=options["secret"])
                self.stdout.write(f"added secret {row.fingerprint} to {options['slug']}")
            elif action == "remove-secret":
                endpoint_secret_remove(endpoint=webhook_endpoint_get(slug=options["slug"]), secret=options["secret"])
                self.stdout.write(f"removed a secret from {options['slug']}")
            else:
                self._list()
        except WebhookError as exc:
            raise CommandError(exc.message) from None

    def _list(self):
        endpoints = WebhookEndpoint.objects.prefetch_related("secrets")
        if not endpoints:
            self.stdout.write("no endpoints")
        for endpoint in endpoints:
            secrets = ", ".join(f"{row.hint}…{row.fingerprint}" for row in endpoint.secrets.all()) or "none"
            state = "active" if endpoint.is_active else "inactive"
            self.stdout.write(f"{endpoint.slug}\t{endpoint.scheme}\t{state}\tsecrets: {secrets}")
