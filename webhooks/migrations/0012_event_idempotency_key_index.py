# The index the unique constraint on idempotency_key used to give the events table (admin and support search by key).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0011_event_partitions'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='webhookevent',
            index=models.Index(fields=['idempotency_key'], name='webhookevent_idempotency_key'),
        ),
    ]
