"""API rate limits (DRF throttles), counted in Django's default cache so every web process shares
them: API_THROTTLE_USER per authenticated account, API_THROTTLE_ANON per client address.

The address is the one the webhook throttling trusts (WEBHOOK_TRUSTED_PROXIES), not DRF's own
X-Forwarded-For reading, which would let a client choose its address.
"""

from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from webhooks.throttling import client_address


class _TrustedAddress:
    def get_ident(self, request):
        return client_address(request.META) or "unknown"


class ApiUserThrottle(_TrustedAddress, UserRateThrottle):
    scope = "user"


class ApiAnonThrottle(_TrustedAddress, AnonRateThrottle):
    scope = "anon"
