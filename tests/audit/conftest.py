import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from config.permissions import OPERATORS, SERVICES, SUPPORT
from tests.accounts.factories import token_key_for


def _token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_key_for(user)}")
    return client


def _member(username: str, group: str | None = None, **extra) -> User:
    user = User.objects.create_user(username=username, password="unused-password-1", **extra)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def support_client(db):
    return _token_client(_member("support-1", SUPPORT))


@pytest.fixture
def operator_client(db):
    return _token_client(_member("operator-1", OPERATORS))


@pytest.fixture
def services_client(db):
    return _token_client(_member("service-1", SERVICES))


@pytest.fixture
def superuser_client(db):
    return _token_client(_member("root-1", is_superuser=True, is_staff=True))


@pytest.fixture(autouse=True)
def _audit_entry_ids_from_one(request):
    """Entry ids come from a sequence (migration 0006), which a test's rollback does not reset: start
    it at 1 in every database test, so tests can name entries 1, 2, 3… as appended."""
    if not (request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(request.fixturenames)):
        return
    request.getfixturevalue("_django_db_helper")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ALTER SEQUENCE audit_auditentry_id_seq RESTART WITH 1")


def used_head():
    """The head of the shard a single-process test appends to: every append of one process goes to
    its preferred shard while no other transaction holds it. The busiest head; any head if none is used."""
    from audit.models import AuditChainHead

    return AuditChainHead.objects.order_by("-last_seq", "id").first()


def used_head_position() -> tuple[int, str]:
    head = used_head()
    return head.last_seq, head.last_hash
