"""INSERT … ON CONFLICT DO NOTHING RETURNING, for the unique rows that make effects idempotent.

Django's get_or_create costs a SELECT, a SAVEPOINT, the INSERT and a RELEASE for each new row;
bulk_create(ignore_conflicts=True) cannot say which rows were new. This is one statement that does
both, on PostgreSQL and SQLite (3.35+), and never aborts the surrounding transaction on a duplicate.
"""

import functools

from django.db import connection, models


@functools.cache
def _insert_sql(model: type[models.Model], fields: tuple[str, ...], conflict: tuple[str, ...], rows: int) -> str:
    meta = model._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(name).column) for name in fields)
    values = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * rows)
    target = ", ".join(quote(meta.get_field(name).column) for name in conflict)
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {values} "
        f"ON CONFLICT ({target}) DO NOTHING RETURNING {quote(meta.pk.column)}"
    )


@functools.cache
def _columns(model: type[models.Model]) -> tuple[tuple[models.Field, ...], tuple[models.Field, ...]]:
    """The fields an INSERT writes (all but an auto-increment key), and those that set themselves."""
    fields = tuple(f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, models.AutoField)))
    auto_now = tuple(f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False))
    return fields, auto_now


def rows_insert_new(objs: list[models.Model], *, conflict_fields: tuple[str, ...]) -> set:
    """Insert the rows whose `conflict_fields` are not taken yet; return the primary keys inserted.

    A generated primary key (e.g. a UUID default) is inserted as given; an auto-increment one is left
    to the database. `conflict_fields` must be covered by a unique constraint.
    """
    if not objs:
        return set()
    model = type(objs[0])
    meta = model._meta
    fields, auto_now = _columns(model)
    for obj in objs:
        for field in auto_now:
            field.pre_save(obj, add=True)
    params = [field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objs for field in fields]
    fields = tuple(field.attname for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(model, fields, conflict_fields, len(objs)), params)
        inserted = {meta.pk.to_python(row[0]) for row in cursor.fetchall()}
    return inserted
