"""Keys issued by rest_framework.authtoken were stored in clear in authtoken_token. Each becomes an
ApiToken holding only its digest (the same key keeps working, with an expiry counted from this
migration), then the clear-text table is dropped, so no copy of a key is left in the database."""

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

OLD_TABLE = "authtoken_token"


def hash_drf_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    now = timezone.now()
    expires_at = now + timedelta(days=settings.API_TOKEN_EXPIRES_DAYS)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
    ApiToken.objects.bulk_create(
        ApiToken(user_id=user_id, prefix=key[:8], digest=hashlib.sha256(key.encode()).hexdigest(),
                 created_at=created or now, expires_at=expires_at)
        for key, user_id, created in rows
    )
    schema_editor.execute(f"DROP TABLE {OLD_TABLE}")
    # Forget its migrations too: re-adding the app later recreates an empty table.
    schema_editor.execute("DELETE FROM django_migrations WHERE app = 'authtoken'")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_api_token")]

    # Irreversible on purpose: the clear-text keys are gone.
    operations = [migrations.RunPython(hash_drf_tokens, migrations.RunPython.noop)]
