"""Admission of a delivery before any signature work: source allowlist and rate limits.

Two fixed-window limits, counted in Django's cache so every web process shares them (Redis, or a
file cache under var/cache with the embedded default):

- WEBHOOK_RATE_LIMIT_PER_CLIENT counts *refusals* (4xx: unknown slugs, bad signatures, forbidden
  sources) per client address; past it the address gets 429 for the rest of the window. Verified
  deliveries never count, so a provider's retry storm is not throttled by this limit, and a client
  inside an endpoint's allowlist is never throttled by it on that endpoint. Only refusals touch the
  shared counter; each process remembers the clients it saw pass the limit, so the hot path of a
  verified delivery makes no cache round trip.
- WEBHOOK_RATE_LIMIT_PER_ENDPOINT (off by default) counts every request to a known endpoint.

The endpoint's existence and allowlist are cached in-process for WEBHOOK_SOURCES_CACHE_SECONDS,
unknown slugs included, so a stream of made-up slugs costs no database query per request.
"""

import ipaddress
import logging
import math
import re
import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from config.client_address import Network, address_parse, client_address, networks_contains, networks_parse
from webhooks import metrics
from webhooks.exceptions import (
    ForbiddenSource,
    IdempotencyConflict,
    InvalidSource,
    RateLimited,
    UnknownEndpoint,
    WebhookError,
)
from webhooks.models import WebhookEndpoint

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])[a-z]*\s*$")
_clock = time.time  # the windows' clock (tests pin it)
# Bounds the in-process source cache against a flood of distinct made-up slugs.
_SOURCES_MAX = 10_000


# --- Addresses and allowlists ---------------------------------------------------------------------


def sources_parse(values) -> list[str]:
    """Normalise CIDRs (a bare address is a /32 or /128); raises InvalidSource on the first bad one."""
    parsed = []
    for value in values:
        try:
            network = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise InvalidSource(f"not an IP network: {str(value)[:60]!r}") from None
        if str(network) not in parsed:
            parsed.append(str(network))
    return parsed


# --- The in-process endpoint cache (positive and negative) ----------------------------------------


@dataclass(frozen=True)
class _Source:
    exists: bool
    networks: tuple[Network, ...]
    loaded_at: float


_sources: dict[str, _Source] = {}


def sources_cache_clear() -> None:
    _sources.clear()


def _source_load(slug: str) -> _Source:
    row = WebhookEndpoint.objects.filter(slug=slug, is_active=True).values_list("allowed_sources", flat=True).first()
    if len(_sources) >= _SOURCES_MAX:
        _sources.clear()
    entry = _Source(row is not None, networks_parse(tuple(row or ())), time.monotonic())
    _sources[slug] = entry
    return entry


# --- Rate limits ----------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def rate_parse(value: str) -> tuple[int, int] | None:
    """`"600/m"` → (600, 60); `"10/5s"` → (10, 5); empty → None (no limit)."""
    if not value.strip():
        return None
    match = _RATE.match(value)
    if not match:
        raise ImproperlyConfigured(f"a rate limit is N/period (e.g. 600/m), not {value!r}")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _PERIODS[unit]


def _window(name: str, rate: tuple[int, int], *, hit: bool) -> tuple[int, int]:
    """(count in the current window, seconds until it ends); with `hit`, count this request first."""
    _, period = rate
    now = _clock()
    window = int(now // period)
    key = f"rl:{name}:{period}:{window}"
    retry_after = max(1, math.ceil((window + 1) * period - now))
    # Throttling must never refuse or fail a delivery because the cache is away: fail open. The
    # error classes differ per backend (redis, OS errors for files), hence the broad catch.
    try:
        if not hit:
            return cache.get(key, 0), retry_after
        cache.add(key, 0, timeout=period + 5)
        try:
            return cache.incr(key), retry_after
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=period + 5)
            return 1, retry_after
    except Exception as exc:  # noqa: BLE001
        logger.warning("rate limit not applied, cache unavailable: %s", type(exc).__name__)
        return 0, retry_after


def _refused(slug: str, reason: str) -> None:
    metrics.refused.labels(endpoint=slug, reason=reason).inc()


def webhook_request_admit(*, slug: str, meta) -> None:
    """Refuse a delivery before reading or verifying it: 429 past a limit, 404 for an unknown slug,
    403 from outside the endpoint's allowlist. Raises a WebhookError; returns None to go on.

    The per-client check reads no shared state: a client is throttled here once this process has
    seen the shared refusal counter reach the limit (`webhook_refusal_record`), so a verified
    delivery costs no cache round trip at all.
    """
    client = address_parse(client_address(meta))
    entry = _sources.get(slug)  # possibly stale: enough to know whether the client is allowlisted
    allowlisted = entry is not None and networks_contains(entry.networks, client)
    if not allowlisted:
        retry_after = _client_throttled_for(str(client))
        if retry_after:
            # An unknown slug must not become a metric label: an attacker chooses it.
            _refused(slug if entry is not None and entry.exists else "", "rate_limited")
            raise RateLimited("too many refused requests from this address", retry_after=retry_after)
    if entry is None or time.monotonic() - entry.loaded_at >= settings.WEBHOOK_SOURCES_CACHE_SECONDS:
        entry = _source_load(slug)
    if not entry.exists:
        raise UnknownEndpoint("no active endpoint with this slug")
    if entry.networks and not networks_contains(entry.networks, client):
        _refused(slug, "forbidden_source")
        logger.warning("webhook refused: endpoint=%s reason=forbidden_source", slug)
        raise ForbiddenSource("this endpoint does not accept deliveries from this address")
    endpoint_rate = rate_parse(settings.WEBHOOK_RATE_LIMIT_PER_ENDPOINT)
    if endpoint_rate is not None:
        count, retry_after = _window(f"endpoint:{slug}", endpoint_rate, hit=True)
        if count > endpoint_rate[0]:
            _refused(slug, "rate_limited")
            raise RateLimited("too many requests to this endpoint", retry_after=retry_after)


def webhook_refusal_record(*, slug: str, meta, error: WebhookError) -> WebhookError:
    """Count a refused request against its client address (WEBHOOK_RATE_LIMIT_PER_CLIENT) in the
    shared cache, and return the error to answer with: the refusal itself, or a 429 once the shared
    count is past the limit (a process that had not yet seen the client throttled learns it here).

    Not counted: 429s themselves (a throttled client's window ends on time) and idempotency
    conflicts, which only a verified delivery can cause.
    """
    rate = rate_parse(settings.WEBHOOK_RATE_LIMIT_PER_CLIENT)
    if rate is None or isinstance(error, (RateLimited, IdempotencyConflict)) or not 400 <= error.status_code < 500:
        return error
    client = str(address_parse(client_address(meta)))
    count, retry_after = _window(f"client:{client}", rate, hit=True)
    if count >= rate[0]:
        _client_throttle(client, retry_after)
    if count > rate[0]:
        entry = _sources.get(slug)
        _refused(slug if entry is not None and entry.exists else "", "rate_limited")
        return RateLimited("too many refused requests from this address", retry_after=retry_after)
    return error


# Clients this process knows to be past the refusal limit, with the end of their window (the windows'
# clock). Bounded against a flood of distinct addresses: forgetting one only costs a counter round trip.
_throttled: dict[str, float] = {}
_THROTTLED_MAX = 10_000


def _client_throttle(client: str, retry_after: int) -> None:
    if len(_throttled) >= _THROTTLED_MAX:
        _throttled.clear()
    _throttled[client] = _clock() + retry_after


def _client_throttled_for(client: str) -> int:
    """Seconds until this process lets `client` through again; 0 when it is not throttled."""
    until = _throttled.get(client)
    if until is None:
        return 0
    remaining = math.ceil(until - _clock())
    if remaining <= 0:
        _throttled.pop(client, None)
        return 0
    return remaining


def throttled_clients_forget() -> None:
    _throttled.clear()
