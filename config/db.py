"""INSERT … ON CONFLICT DO NOTHING RETURNING, for the unique rows that make effects idempotent.

Django's get_or_create costs a SELECT, a SAVEPOINT, the INSERT and a RELEASE for each new row;
bulk_create(ignore_conflicts=True) cannot say which rows were new. This is one statement that does
both, on PostgreSQL and SQLite (3.35+), and never aborts the surrounding transaction on a duplicate.
"""

import functools

from django.db import connection, models, transaction


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


@functools.cache
def _insert_keyed_sql(
    model: type[models.Model], fields: tuple[str, ...], key_model: type[models.Model], key_fields: tuple[str, ...],
    owner: type[models.Model], version_field: str, live_field: str,
) -> str:
    meta, key_meta, owner_meta = model._meta, key_model._meta, owner._meta
    quote = connection.ops.quote_name

    def columns(meta, names):
        return ", ".join(quote(meta.get_field(name).column) for name in names)

    def values(meta, names):
        return ", ".join(f"CAST(%s AS {meta.get_field(name).cast_db_type(connection)})" for name in names)

    pk, key_pk = quote(meta.pk.column), quote(key_meta.pk.column)
    return (
        f"WITH owner AS (SELECT {quote(owner_meta.get_field(version_field).column)} AS version "
        f"FROM {quote(owner_meta.db_table)} WHERE {quote(owner_meta.pk.column)} = %s "
        f"AND {quote(owner_meta.get_field(live_field).column)}), "
        f"key AS (INSERT INTO {quote(key_meta.db_table)} ({columns(key_meta, key_fields)}) SELECT {values(key_meta, key_fields)} "
        f"WHERE EXISTS (SELECT 1 FROM owner WHERE version = %s) ON CONFLICT ({key_pk}) DO NOTHING RETURNING 1), "
        # One row from `key` when the key was new, none on a conflict: the row follows its key or nothing.
        f"inserted AS (INSERT INTO {quote(meta.db_table)} ({columns(meta, fields)}) SELECT {values(meta, fields)} "
        f"FROM key RETURNING {pk}), "
        # The key as stored before this statement (its snapshot does not see the row `key` adds).
        f"stored AS (SELECT {columns(key_meta, key_fields)} FROM {quote(key_meta.db_table)} WHERE {key_pk} = %s) "
        f"SELECT (SELECT {pk} FROM inserted), (SELECT version FROM owner), stored.* FROM (SELECT 1) AS one LEFT JOIN stored ON true"
    )


def row_insert_keyed_if_current(
    obj: models.Model, *, key: models.Model, owner: type[models.Model], owner_id, version_field: str, version: int,
    live_field: str,
) -> tuple[object | None, int | None, models.Model | None]:
    """Insert `obj` and its `key` row (a separate table whose primary key is the unique key of `obj`)
    together, both or neither, only while the `owner` row `owner_id` is live and still at `version`.

    For tables that cannot hold the unique constraint themselves (a partitioned table's unique indexes
    must include the partition key). Returns (the primary key of `obj` inserted or None, the owner's
    current version or None, the key row already stored or None): a duplicate is answered by the
    stored key row. On PostgreSQL this is one statement for a new row and for a duplicate alike; a
    duplicate committed after that statement began (a concurrent first delivery) costs one more read.
    SQLite (no INSERT inside WITH) reads the version first and inserts both in a transaction.
    """
    model, key_model = type(obj), type(key)
    fields, auto_now = _columns(model)
    key_fields, _ = _columns(key_model)
    for field in auto_now:
        field.pre_save(obj, add=True)
    key_value = key.pk
    if connection.vendor != "postgresql":
        current = (
            owner._default_manager.filter(pk=owner_id, **{live_field: True})
            .values_list(version_field, flat=True).first()
        )
        if current != version:
            return None, current, None
        with transaction.atomic():
            if rows_insert_new([key], conflict_fields=(key_model._meta.pk.name,)):
                model._base_manager.bulk_create([obj])  # its key was new, so the row is: a plain INSERT
                return obj.pk, current, None
        return None, current, key_model._default_manager.filter(pk=key_value).first()
    params = [owner_id]
    params += [field.get_db_prep_save(getattr(key, field.attname), connection) for field in key_fields]
    params.append(version)
    params += [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in fields]
    params.append(key_model._meta.pk.get_db_prep_save(key_value, connection))
    sql = _insert_keyed_sql(
        model, tuple(f.attname for f in fields), key_model, tuple(f.attname for f in key_fields), owner, version_field, live_field
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        pk, current, *stored = cursor.fetchone()
    if pk is not None:
        return model._meta.pk.to_python(pk), current, None
    if stored[0] is None and current == version:
        # The key was taken by a transaction that committed after this statement's snapshot.
        return None, current, key_model._default_manager.filter(pk=key_value).first()
    stored_row = key_model(**{f.attname: f.to_python(v) for f, v in zip(key_fields, stored)}) if stored[0] is not None else None
    return None, current, stored_row
