"""Monthly partitions of the events table, created ahead of time (PostgreSQL only).

The work is done by the database function webhooks_event_partitions_ensure() (migration 0011), which
runs with the schema owner's rights: the application role may not create tables. It creates the
partitions of this month and the next `months_ahead` ones that do not exist yet, and a DEFAULT
partition, so an insert never fails for a month without its partition (it lands in DEFAULT).
"""

from django.conf import settings
from django.db import connection


def event_partitions_ensure(*, months_ahead: int | None = None) -> int:
    """Create the missing monthly partitions from this month on; how many were created."""
    if connection.vendor != "postgresql":
        return 0  # SQLite keeps one plain table
    months_ahead = settings.EVENT_PARTITIONS_AHEAD_MONTHS if months_ahead is None else months_ahead
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhooks_event_partitions_ensure(%s)", [months_ahead])
        return cursor.fetchone()[0]


def event_partitions() -> list[tuple[str, str]]:
    """(partition, bounds) of the events table, oldest first; DEFAULT last. Empty on SQLite."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'webhooks_webhookevent'::regclass ORDER BY c.relname"
        )
        return cursor.fetchall()
