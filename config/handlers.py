"""The web process's WSGI application: webhook deliveries through a lean middleware chain, every
other request through settings.MIDDLEWARE.

A provider's POST to /webhooks/<slug>/ uses no session, user, CSRF token, message, static file,
frame option or login lockout, yet the full chain does work for each of them on every request
(issue 13: about a fifth of the hot path's CPU). Requests whose path starts with WEBHOOK_PREFIX go
through WEBHOOK_MIDDLEWARE instead (settings.py says what it keeps and why). The choice uses the
same PATH_INFO that Django resolves, so such a request can only reach the URLs under /webhooks/.

config/wsgi.py serves `application_build()`; the tests call the same function.
"""

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

WEBHOOK_PREFIX = "/webhooks/"


def webhook_middleware() -> list[str]:
    """WEBHOOK_MIDDLEWARE in settings.MIDDLEWARE's order, plus whatever an instrumentation inserted
    there (the tracing middleware, config/tracing.py, once tracing_init() ran)."""
    lean = set(settings.WEBHOOK_MIDDLEWARE)
    unknown = lean.difference(settings.MIDDLEWARE)
    if unknown:
        raise ValueError(f"WEBHOOK_MIDDLEWARE names middleware MIDDLEWARE does not have: {sorted(unknown)}")
    return [path for path in settings.MIDDLEWARE if path in lean or path.startswith("opentelemetry.")]


class WebhookWSGIHandler(WSGIHandler):
    """Django's WSGIHandler with the webhook middleware chain instead of settings.MIDDLEWARE."""

    def load_middleware(self, is_async=False):
        # BaseHandler.load_middleware reads settings.MIDDLEWARE and nothing else: let it build the
        # chain from our list (once, at start-up, before any request thread exists), then put the
        # setting back for everything else in the process.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = webhook_middleware()
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


class PathDispatchApplication:
    """One WSGI application: /webhooks/… to the lean handler, everything else to Django's own."""

    def __init__(self):
        self.webhooks = WebhookWSGIHandler()
        self.default = WSGIHandler()

    def handler_for(self, environ) -> WSGIHandler:
        return self.webhooks if environ.get("PATH_INFO", "").startswith(WEBHOOK_PREFIX) else self.default

    def __call__(self, environ, start_response):
        return self.handler_for(environ)(environ, start_response)


def application_build() -> PathDispatchApplication:
    """Call after django.setup() and tracing_init() (the tracing middleware must be in MIDDLEWARE)."""
    return PathDispatchApplication()
