"""Who the client of a request is: REMOTE_ADDR, or behind trusted proxies (WEBHOOK_TRUSTED_PROXIES)
the right-most X-Forwarded-For hop that is not one of them. One reading for every limit that counts
per client: webhook throttling and allowlists, the API throttles and the admin login lockout."""

import ipaddress
from functools import lru_cache

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_parse(value: str | None) -> Address | None:
    try:
        address = ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def networks_contains(networks: tuple[Network, ...], address: Address | None) -> bool:
    return address is not None and any(address in network for network in networks)


@lru_cache(maxsize=8)
def networks_parse(values: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def client_address(meta) -> str:
    """The client's address: REMOTE_ADDR, unless that is a trusted proxy (WEBHOOK_TRUSTED_PROXIES).

    Behind trusted proxies it is the right-most X-Forwarded-For entry that is not itself a trusted
    proxy: entries left of it were written by the client and prove nothing.
    """
    remote = address_parse(meta.get("REMOTE_ADDR"))
    proxies = networks_parse(tuple(settings.WEBHOOK_TRUSTED_PROXIES))
    if remote is None or not networks_contains(proxies, remote):
        return str(remote or "")
    client = remote
    for hop in reversed(meta.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = address_parse(hop)
        if address is None:
            break
        client = address
        if not networks_contains(proxies, address):
            break
    return str(client)
