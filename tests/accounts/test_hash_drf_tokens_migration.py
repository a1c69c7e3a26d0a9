import importlib
from datetime import timedelta

import pytest
from django.apps import apps as global_apps
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken

migration = importlib.import_module("accounts.migrations.0002_hash_drf_tokens")


@pytest.mark.django_db  # PostgreSQL DDL is transactional: the table and its drop roll back with the test
def test_keys_stored_in_clear_by_drf_are_hashed_keep_working_and_the_clear_table_is_dropped():
    user = User.objects.create_user("legacy-service")
    user.groups.add(Group.objects.get(name="services"))
    key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:  # authtoken_token as rest_framework.authtoken created it
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp with time zone NOT NULL, "
            "user_id integer NOT NULL UNIQUE REFERENCES auth_user(id))"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [key, timezone.now(), user.pk])

    with connection.schema_editor() as editor:
        migration.hash_drf_tokens(global_apps, editor)

    assert "authtoken_token" not in connection.introspection.table_names()
    token = ApiToken.objects.get(user=user)
    assert token.prefix == key[:8] and key not in token.digest
    assert token.expires_at > timezone.now() + timedelta(days=80)
    response = APIClient().get("/api/v1/entitlements/?user=1", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200
