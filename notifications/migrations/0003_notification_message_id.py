from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0002_queued_status"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="message_id",
            field=models.CharField(
                blank=True, db_index=True, max_length=255,
                help_text="The e-mail's Message-ID header, set when it is claimed for sending: find it in the mail provider's logs.",
            ),
        ),
    ]
