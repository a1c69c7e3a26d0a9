"""Idempotency keys move to their own table (webhooks_eventkey), so that the events table can be
partitioned by month (0011): a partitioned table cannot hold a unique index without its partition key.
Filled from the stored events before their unique constraint goes, so every key stays taken."""

import django.db.models.deletion
from django.db import migrations, models


def event_keys_fill(apps, schema_editor):
    # One statement, on PostgreSQL and SQLite: the keys are unique already (the constraint still holds).
    schema_editor.execute(
        "INSERT INTO webhooks_eventkey (idempotency_key, event_id, content_hash, received_at) "
        "SELECT idempotency_key, id, content_hash, received_at FROM webhooks_webhookevent"
    )


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0009_webhookevent_traceparent'),
    ]

    operations = [
        migrations.CreateModel(
            name='EventKey',
            fields=[
                ('idempotency_key', models.CharField(max_length=330, primary_key=True, serialize=False)),
                ('event_id', models.UUIDField()),
                ('content_hash', models.CharField(max_length=64)),
                ('received_at', models.DateTimeField()),
            ],
        ),
        migrations.RunPython(event_keys_fill, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name='webhookevent',
            name='webhookevent_unique_idempotency_key',
        ),
        migrations.AddField(
            model_name='webhookevent',
            name='payload_removed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='deadletter',
            name='event',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='dead_letters', to='webhooks.webhookevent'),
        ),
        migrations.AddIndex(
            model_name='webhookevent',
            index=models.Index(condition=models.Q(('payload_removed_at__isnull', True), ('status__in', ['processed', 'ignored', 'dead'])), fields=['received_at'], name='webhookevent_payload_kept'),
        ),
    ]
