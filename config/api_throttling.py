"""API rate limits (DRF throttles), counted in Django's default cache so every web process shares
them: API_THROTTLE_USER per authenticated account, API_THROTTLE_ANON per client address.

The address is the one the webhook throttling trusts (WEBHOOK_TRUSTED_PROXIES), not DRF's own
X-Forwarded-For reading, which would let a client choose its address.
"""

from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle, UserRateThrottle

from config.client_address import client_address


class _TrustedAddress:
    def get_ident(self, request):
        return client_address(request.META) or "unknown"


class ApiUserThrottle(_TrustedAddress, UserRateThrottle):
    scope = "user"


class ApiAnonThrottle(_TrustedAddress, AnonRateThrottle):
    scope = "anon"


def anonymous_refusal_throttle_wait(request, view) -> float | None:
    """Counts a refused unauthenticated API request (a 401) against its address's API_THROTTLE_ANON
    budget; past it, the seconds until the budget returns, else None.

    DRF checks permissions before throttles, so a request that authenticates as nobody is refused
    with 401 before ApiAnonThrottle runs: counted here instead, a client guessing tokens gets 429s.
    """
    throttle = ApiAnonThrottle()
    if throttle.allow_request(request, view):
        return None
    return throttle.wait() or 1.0


class ApiScopedThrottle(_TrustedAddress, ScopedRateThrottle):
    """A view's own budget (`throttle_scope`, rate in DEFAULT_THROTTLE_RATES), on top of the user's."""
