"""Search subjects through a covering index (value_hash, entry_id) instead of (value_hash).

A search by email hashes the term under every kind and key and asks for the entries with one of
those hashes, newest first. With (value_hash) alone, each matching subject costs a heap visit to
learn its entry id; with (value_hash, entry_id) the ids come from the index (an index-only scan,
the table being append-only and so all-visible once vacuumed). The old index is a prefix of the new
one, so it goes.

CONCURRENTLY on PostgreSQL: every event's processing appends audit entries and subjects, and a plain
CREATE INDEX holds a SHARE lock that blocks those INSERTs for the whole build (minutes at tens of
millions of subjects), which would stall fulfilment. Concurrent builds cannot run in a transaction,
hence `atomic = False`; a build that fails leaves an INVALID index, dropped before trying again.
SQLite (the embedded default) has no CONCURRENTLY and no concurrent writers to spare: plain there.
"""

from django.contrib.postgres.operations import (
    AddIndexConcurrently,
    RemoveIndexConcurrently,
)
from django.db import migrations, models
from django.db.migrations.operations import AddIndex, RemoveIndex

NEW_INDEX = "auditsubject_hash_entry"


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)
        # A concurrent build that failed leaves an INVALID index of this name behind.
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{self.index.name}"')
        return super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
        return super().database_backwards(app_label, schema_editor, from_state, to_state)


class RemoveIndexConcurrentlyOnPostgres(RemoveIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)
        return super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
        return super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("audit", "0004_keyed_chain_no_truncate_app_grants")]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="auditsubject",
            index=models.Index(fields=["value_hash", "entry"], name=NEW_INDEX),
        ),
        RemoveIndexConcurrentlyOnPostgres(model_name="auditsubject", name="auditsubject_value_hash"),
    ]
