import time
import urllib.error
import urllib.parse
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from providers import scheme_get
from webhooks.endpoints import endpoint_secrets_decrypted, webhook_endpoint_get
from webhooks.exceptions import WebhookError


class Command(BaseCommand):
    help = "Sign a sample event with the endpoint's secret and POST it, like `stripe trigger`."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("event_type", help="e.g. checkout.session.completed")
        parser.add_argument("--url", help="the endpoint's URL, or the service's base URL (default: PUBLIC_BASE_URL)")
        parser.add_argument("--secret", help="sign with this secret (needed when the endpoint holds only whpk_ keys)")

    def handle(self, *args, slug, event_type, url=None, secret=None, **options):
        try:
            endpoint = webhook_endpoint_get(slug=slug)
        except WebhookError as exc:
            raise CommandError(exc.message) from None
        scheme = scheme_get(endpoint.scheme)
        secret = secret or next((s for s in endpoint_secrets_decrypted(endpoint=endpoint) if not s.startswith("whpk_")), None)
        if secret is None:
            raise CommandError("the endpoint has no signing secret, only public keys: pass --secret whsk_...")
        try:
            body, event_id = scheme.sample(event_type, mode=endpoint.mode)
        except KeyError as exc:
            raise CommandError(str(exc.args[0])) from None
        body, headers = scheme.signed_request(secret=secret, body=body, timestamp=int(time.time()), event_id=event_id)
        url = _endpoint_url(url or settings.PUBLIC_BASE_URL, slug)
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read().decode()
        except urllib.error.URLError as exc:
            raise CommandError(f"could not reach {url}: {exc.reason}") from None
        self.stdout.write(f"POST {url} {event_type} ({event_id}) -> {status} {answer}")
        if status >= 300:
            raise CommandError(f"the endpoint answered {status}")


def _endpoint_url(url: str, slug: str) -> str:
    """A base URL (`http://127.0.0.1:8000`, with or without a path of `/`) gets `/webhooks/SLUG/`."""
    if urllib.parse.urlsplit(url).path in ("", "/"):
        return f"{url.rstrip('/')}/webhooks/{slug}/"
    return url
