"""Secret lifecycle: expiry of a rolled secret, and the version that tells web processes their cached
keys are stale.

Existing rows need no data change: every endpoint starts at version 0 (processes that load its keys
afterwards cache version 0 too), and existing secrets get no expiry. Stored fingerprints stay as
they are: they are display-only now (removal compares decrypted values), so the key they were
computed with no longer matters.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0004_outbox_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpointsecret",
            name="expires_at",
            field=models.DateTimeField(blank=True, help_text="Stops verifying at this time; empty: never.", null=True),
        ),
        migrations.AddField(
            model_name="webhookendpoint",
            name="secrets_version",
            field=models.BigIntegerField(default=0, editable=False),
        ),
    ]
