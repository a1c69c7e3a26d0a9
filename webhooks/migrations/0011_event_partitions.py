"""PostgreSQL: the events table becomes partitioned by month of received_at, without copying a row.

The populated table is renamed and attached, as it is, as the partition of everything received before
the first monthly partition (the start of next month): a CHECK constraint that matches that range is
validated first, so ATTACH needs no second scan, and the table's indexes are attached to the parent's
equivalent ones instead of being rebuilt. Only the (id, received_at) unique index that the new primary
key needs is built (a partitioned table's primary key must include its partition key). Copying in
batches would have left two tables to keep in step while the service writes; attaching is one short
transaction, at the cost of one large "before" partition that retention empties and that can be
detached once everything in it is past retention.

Monthly partitions ahead and a DEFAULT partition come from webhooks_event_partitions_ensure(), a
SECURITY DEFINER function owned by the schema owner: the application role, which cannot create tables,
calls it from beat (webhooks/partitions.py). SQLite (the embedded `make run` default) keeps a plain table.
"""

from datetime import datetime, timezone

from django.db import migrations

TABLE = "webhooks_webhookevent"
BEFORE = "webhooks_webhookevent_before"
MONTHS_AHEAD = 3

ENSURE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION webhooks_event_partitions_ensure(months_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');  -- UTC months, whatever the session's zone
    created integer := 0;
    partition text;
BEGIN
    -- An insert for a month without its partition lands here instead of failing.
    CREATE TABLE IF NOT EXISTS {TABLE}_default PARTITION OF {TABLE} DEFAULT;
    FOR i IN 0..months_ahead LOOP
        partition := '{TABLE}_p' || to_char(month, 'YYYY_MM');
        IF to_regclass(partition) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF {TABLE} FOR VALUES FROM (%L) TO (%L)',
                               partition, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION
                -- The month is inside the partition of the rows stored before partitioning.
                WHEN invalid_object_definition THEN NULL;
                -- The DEFAULT partition already holds rows of this month: they stay there, still found.
                WHEN check_violation THEN
                    RAISE WARNING 'partition % not created: the default partition holds rows of that month', partition;
            END;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END $$;
"""


def _rows(cursor, sql, params=()):
    cursor.execute(sql, params)
    return cursor.fetchall()


def _run(connection, statements):
    # A cursor without parameters: the function body's format('%I', …) is not a query placeholder.
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def partition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    now = datetime.now(timezone.utc)
    boundary = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=timezone.utc)
    with connection.cursor() as cursor:
        table_oid = f"'{TABLE}'::regclass"
        indexes = _rows(
            cursor,
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            f"WHERE x.indrelid = {table_oid} AND NOT x.indisprimary ORDER BY i.relname",
        )
        foreign_keys = _rows(
            cursor, f"SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = {table_oid} AND contype = 'f'"
        )
        (primary_key,) = _rows(cursor, f"SELECT conname FROM pg_constraint WHERE conrelid = {table_oid} AND contype = 'p'")[0]
    statements = [f"ALTER TABLE {TABLE} RENAME TO {BEFORE}"]
    # Index names are per schema: the old ones step aside for the parent's, and are attached to them.
    statements += [f'ALTER INDEX "{name}" RENAME TO {BEFORE}_{number}' for number, (name, _) in enumerate(indexes)]
    statements += [
        f'ALTER TABLE {BEFORE} DROP CONSTRAINT "{primary_key}"',
        f"CREATE UNIQUE INDEX {BEFORE}_pkey ON {BEFORE} (id, received_at)",
        # Defaults, NOT NULLs and CHECKs (attempts >= 0) as they are; no rows.
        f"CREATE TABLE {TABLE} (LIKE {BEFORE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (received_at)",
        f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, received_at)",
    ]
    statements += [f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}' for name, definition in foreign_keys]
    statements += [definition for _, definition in indexes]  # captured before the rename: they name the parent
    statements += [
        f"ALTER TABLE {BEFORE} ADD CONSTRAINT {BEFORE}_range CHECK (received_at < '{boundary.isoformat()}')",
        f"ALTER TABLE {TABLE} ATTACH PARTITION {BEFORE} FOR VALUES FROM (MINVALUE) TO ('{boundary.isoformat()}')",
        f"ALTER TABLE {BEFORE} DROP CONSTRAINT {BEFORE}_range",  # the partition bound says the same now
        ENSURE_FUNCTION,
        f"SELECT webhooks_event_partitions_ensure({MONTHS_AHEAD})",
    ]
    _run(connection, statements)


def unpartition(apps, schema_editor):
    """Back to one plain table: the rows are copied (a reverse migration is an emergency, not routine)."""
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        indexes = _rows(
            cursor,
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            f"WHERE x.indrelid = '{TABLE}'::regclass AND NOT x.indisprimary",
        )
        foreign_keys = _rows(
            cursor, f"SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '{TABLE}'::regclass AND contype = 'f'"
        )
    statements = [
        f"ALTER TABLE {TABLE} RENAME TO {TABLE}_partitioned",
        f"CREATE TABLE {TABLE} (LIKE {TABLE}_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        f"INSERT INTO {TABLE} SELECT * FROM {TABLE}_partitioned",
        f"DROP TABLE {TABLE}_partitioned",
        "DROP FUNCTION IF EXISTS webhooks_event_partitions_ensure(integer)",
        f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id)",
    ]
    statements += [f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}' for name, definition in foreign_keys]
    statements += [definition for _, definition in indexes]
    _run(connection, statements)


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0010_event_keys_and_retention"),
    ]

    operations = [
        migrations.RunPython(partition, unpartition),
    ]
