"""Every named URL × every role × the methods that matter, against one explicit table.

A URL the resolver knows but MATRIX does not fails `test_every_url_has_a_decision`: a new route
needs a decision here before it ships. The table is the contract's "HTTP API" matrix (see
config/permissions.py) and is meant to be read (and pasted) as it stands.

Roles: anon (no credentials), user (a plain account, not the one the URL names), self (the account
the URL or `?user=` names; "-" where a URL names nobody), oper/supp/serv (members of operators,
support, services; oper and supp are staff), super (superuser). API requests carry a real token.
"""

import re
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group, User
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from tests.accounts.factories import token_key_for
from tests.deadletters.factories import dead_letter_create
from tests.webhooks.factories import WebhookEndpointFactory, WebhookEventFactory

ROLES = ("anon", "user", "self", "oper", "supp", "serv", "super")

# 302 = redirect to the admin login page. Every "admin:*" URL that takes no argument is requested
# (add pages aside); those with an object id sit behind the same AdminSite.admin_view gate. "perm": 200 or 403 by the
# staff member's model permissions (asserted in each app's admin tests); never the login redirect.
MATRIX = """
name                       method   anon  user  self  oper  supp  serv  super
api-root                   GET      401   403   -     200   200   403   200
event-list                 GET      401   403   -     200   200   403   200
event-list                 POST     401   403   -     405   405   403   405
event-detail               GET      401   403   -     200   200   403   200
dead-letter-list           GET      401   403   -     200   403   403   200
dead-letter-detail         GET      401   403   -     200   403   403   200
dead-letter-replay         POST     401   403   -     200   403   403   200
dead-letter-replay         GET      401   403   -     405   403   403   405
dead-letter-resolve        POST     401   403   -     200   403   403   200
dead-letter-discard        POST     401   403   -     200   403   403   200
entitlement-list           GET      401   403   403   200   200   200   200
entitlement-list           POST     401   403   403   405   405   405   405
notification-list          GET      401   403   200   200   200   403   200
notification-preferences   GET      401   403   200   200   200   403   200
notification-preferences   PUT      401   403   200   403   200   403   200
notification-preferences   DELETE   401   403   405   403   405   403   405
audit-list                 GET      401   403   -     403   200   403   200
customer-lookup            GET      401   403   -     403   200   403   200
customer-lookup            POST     401   403   -     403   405   403   405
schema                     GET      401   403   -     200   200   403   200
api-docs                   GET      401   403   -     200   200   403   200
metrics                    GET      200   200   -     200   200   200   200
healthz                    GET      200   200   -     200   200   200   200
readyz                     GET      200   200   -     200   200   200   200
webhook-receive            POST     404   404   -     404   404   404   404
webhook-receive-unslashed  POST     404   404   -     404   404   404   404
notification-unsubscribe   GET      400   400   -     400   400   400   400
admin:*                    GET      302   302   -     perm  perm  302   200
"""
# /metrics: the test client is 127.0.0.1, the loopback scraper METRICS_TOKEN-less mode admits; the
# token and non-loopback cases are tests/config/test_metrics_access.py. Webhooks and the unsubscribe
# page authenticate by signature and signed token, never by account: an unknown slug or a forged
# token is refused alike for everyone. Optional routes absent here (anymail's tracking webhook,
# mounted only with a webhook secret) are signature-authenticated in the same way.


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    expected: dict[str, str]


def _parse(table: str) -> list[Row]:
    lines = [line.split() for line in table.strip().splitlines()]
    header, body = lines[0], lines[1:]
    assert tuple(header[2:]) == ROLES
    return [Row(cells[0], cells[1], dict(zip(ROLES, cells[2:], strict=True))) for cells in body]


ROWS = _parse(MATRIX)


def _named_urls(resolver=None, namespace="") -> set[str]:
    resolver = resolver or get_resolver()
    names = set()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= _named_urls(pattern, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(f"{namespace}{pattern.name}")
    return names


def _decided(name: str) -> bool:
    return any(row.name == name or (row.name.endswith(":*") and name.startswith(row.name[:-1])) for row in ROWS)


def test_every_url_has_a_decision():
    undecided = sorted(name for name in _named_urls() if not _decided(name))
    assert not undecided, f"new URL without a decision in MATRIX: {undecided}"


def test_every_decision_names_a_url_that_exists():
    names = _named_urls()
    stale = [row.name for row in ROWS if not row.name.endswith(":*") and row.name not in names]
    assert not stale, f"MATRIX rows for URLs that no longer exist: {stale}"


# --- Requests ------------------------------------------------------------------------------------


@pytest.fixture
def world(db):
    groups = {name: Group.objects.get(name=name) for name in ("operators", "support", "services")}

    def account(username, group=None, **flags):
        user = User.objects.create_user(username=username, **flags)  # no password: hashing one costs seconds
        if group:
            user.groups.add(groups[group])
        return user

    endpoint = WebhookEndpointFactory(slug="matrix")
    return {
        "target": account("target-buyer"),
        "user": account("someone-else"),
        "oper": account("olivia", "operators", is_staff=True),
        "supp": account("sam", "support", is_staff=True),
        "serv": account("svc-billing", "services"),
        "super": account("root", is_staff=True, is_superuser=True),
        "event": WebhookEventFactory(endpoint=endpoint),
        "dead_letter": dead_letter_create(endpoint=endpoint),
    }


def _request_for(name: str, world: dict) -> tuple[str, dict]:
    """(path, GET query or PUT/POST body) for one URL, with real objects behind every id."""
    target = world["target"].pk
    kwargs = {
        "event-detail": {"pk": world["event"].pk},
        "dead-letter-detail": {"pk": world["dead_letter"].pk},
        "dead-letter-replay": {"pk": world["dead_letter"].pk},
        "dead-letter-resolve": {"pk": world["dead_letter"].pk},
        "dead-letter-discard": {"pk": world["dead_letter"].pk},
        "notification-preferences": {"user_id": target},
        "webhook-receive": {"slug": "no-such-endpoint"},
        "webhook-receive-unslashed": {"slug": "no-such-endpoint"},
        "notification-unsubscribe": {"token": "forged.token"},
    }.get(name, {})
    data = {
        "entitlement-list": {"user": target},
        "notification-list": {"user": target},
        "customer-lookup": {"q": "nobody@example.com"},
        "notification-preferences": {"preferences": {"product_updates": {"email": True}}},
        "dead-letter-replay": {"note": "matrix"},
        "dead-letter-resolve": {"note": "matrix"},
        "dead-letter-discard": {"note": "matrix"},
    }.get(name, {})
    return reverse(name, kwargs=kwargs), data


def _client(role: str, world: dict, *, session: bool) -> APIClient:
    client = APIClient()
    if role == "anon":
        return client
    user = world["target"] if role == "self" else world[role]
    if session:
        client.force_login(user)
    else:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_key_for(user)}")
    return client


def _cases():
    for row in ROWS:
        if row.name.endswith(":*"):
            continue
        for role in ROLES:
            if row.expected[role] != "-":
                yield pytest.param(row, role, id=f"{row.method} {row.name} as {role}")


@pytest.mark.parametrize(("row", "role"), list(_cases()))
def test_the_matrix(row, role, world):
    path, data = _request_for(row.name, world)
    client = _client(role, world, session=False)
    method = getattr(client, row.method.lower())
    if row.method == "GET":
        response = method(path, data)
    else:
        response = method(path, data, format="json")
    assert response.status_code == int(row.expected[role]), response.content[:300]


# --- The admin, as one family ----------------------------------------------------------------------


def _admin_urls_without_arguments() -> list[str]:
    paths = []
    for name in sorted(n for n in _named_urls() if n.startswith("admin:")):
        # The login page itself is public; logout is a POST; autocomplete needs its query parameters.
        if name in ("admin:logout", "admin:login", "admin:autocomplete"):
            continue
        if name.endswith("_add"):  # read-only admins refuse even superusers: the apps' admin tests
            continue
        try:
            paths.append(reverse(name))
        except Exception:  # needs an object id or app label: same gate, see MATRIX's note
            continue
    return paths


ADMIN_ROW = next(row for row in ROWS if row.name == "admin:*")


@pytest.mark.parametrize("role", [r for r in ROLES if ADMIN_ROW.expected[r] != "-"])
def test_the_admin_is_for_staff_only(role, world):
    client = _client(role, world, session=True)
    paths = _admin_urls_without_arguments()
    assert len(paths) > 10  # the index, password change and every model's changelist
    expected = ADMIN_ROW.expected[role]
    for path in paths:
        response = client.get(path)
        if expected == "302":
            assert response.status_code == 302 and re.match(r"^/admin/login/", response["Location"]), path
        elif expected == "perm":
            assert response.status_code in (200, 403), path
        else:
            assert response.status_code == int(expected), path
