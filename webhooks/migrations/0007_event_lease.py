from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0006_endpoint_mode_and_sources"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="lease_holder",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="webhookevent",
            name="lease_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("lease_expires_at__isnull", False)), fields=["lease_expires_at"], name="webhookevent_leased"
            ),
        ),
    ]
