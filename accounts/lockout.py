"""Admin login lockout (django-axes): which address a login attempt comes from, and what its log
lines may say.

Behind the reverse proxy every attempt would come from the proxy's address and one attacker would
lock everybody out; the address is therefore the one the webhook throttling trusts
(WEBHOOK_TRUSTED_PROXIES, config/client_address.py), so both limits agree on who a client is.
"""

from config.client_address import client_address


def lockout_client_ip(request) -> str | None:
    return client_address(request.META) or None  # no address (a test's force_login): axes stores NULL


def lockout_client_str(username, ip_address, user_agent, path_info, request) -> str:
    # axes logs this on every failure; a username and an address are personal data, kept out of logs.
    return f"{{path_info: {path_info!r}}}"
