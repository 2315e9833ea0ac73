"""Model rows written and read by hand-made statements, as the ORM writes and reads them.

A hot path that writes several rows can send them in one round trip: each INSERT a
data-modifying WITH clause of one statement (PostgreSQL runs each exactly once, and Django's
foreign keys are checked at commit, so a row may point at another of the same statement). The
model signals go out as `save()` sends them, so their receivers (the request id stamped on an
action row, the metrics) see these rows too. Column names come from the models' metadata and
every value is a parameter.

The reading side is for a row and its related rows read in one written-out query on a path
run for every request or task: the ORM's building and compiling of such a query cost more than
the query (about a millisecond here). `columns` names a model's columns for the SELECT, and
`load` makes the objects from the row, each value converted as the ORM converts it.
"""

from __future__ import annotations

import functools

from django.db import connection
from django.db.models import Model
from django.db.models.expressions import Col
from django.db.models.signals import post_save, pre_save


def insert_sql(row: Model, *, only_if: tuple[str, list] | None = None) -> tuple[str, list]:
    """`INSERT ... RETURNING pk` for a new row (its pre_save signal sent): SQL and parameters.
    An auto-increment key is left to the database; any other goes in with the row.
    `only_if`: a condition (SQL and its parameters) without which nothing is inserted."""
    meta = row._meta
    pre_save.send(sender=type(row), instance=row, raw=False, using="default", update_fields=None)
    fields = [f for f in meta.concrete_fields if not (f.primary_key and f.db_returning)]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
    placeholders = ", ".join(["%s"] * len(values))
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    if only_if is not None:
        condition, condition_params = only_if
        sql = f"INSERT INTO {table} ({columns}) SELECT {placeholders} WHERE {condition} RETURNING {pk}"  # noqa: S608
        return sql, values + condition_params
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING {pk}", values  # noqa: S608


def inserted(row: Model, pk) -> None:
    """Mark a row as written with its key, and send its post_save as `save()` would."""
    row.pk = pk
    row._state.adding = False
    row._state.db = "default"
    post_save.send(sender=type(row), instance=row, created=True, update_fields=None, raw=False, using="default")


def insert_together(rows: list[Model]) -> None:
    """Insert new rows in one statement, in order, each with its key set afterwards."""
    if not rows:
        return
    clauses, params = [], []
    for n, row in enumerate(rows):
        sql, values = insert_sql(row)
        clauses.append(f"row_{n} AS ({sql})")
        params += values
    keys = ", ".join(f"(SELECT * FROM row_{n})" for n in range(len(rows)))  # noqa: S608 (numbers only)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(clauses)} SELECT {keys}", params)
        pks = cursor.fetchone()
    for row, pk in zip(rows, pks, strict=True):
        inserted(row, pk)


def columns(alias: str, model: type[Model]) -> str:
    """The model's columns, for a SELECT list, in the order `load` takes them."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(field.column)}" for field in model._meta.concrete_fields)


def load(row, models: tuple[type[Model], ...]) -> tuple[list[Model], list]:
    """The objects of `models` from a row that holds their `columns` one after another, and
    whatever the row holds after them."""
    values, loaded = list(row), []
    for model in models:
        width = len(model._meta.concrete_fields)
        loaded.append(_from_values(model, values[:width]))
        values = values[width:]
    return loaded, values


def _from_values(model: type[Model], values: list) -> Model:
    attnames, converters = _converters(model)
    converted = []
    for (column, convert_all), value in zip(converters, values, strict=True):
        for convert in convert_all:
            value = convert(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, attnames, converted)


@functools.cache  # per model: the same on every request (one database, one backend)
def _converters(model: type[Model]) -> tuple[list[str], list[tuple[Col, list]]]:
    """The database backend's converters of each column, then the field's own."""
    fields = model._meta.concrete_fields
    found = []
    for field in fields:
        column = Col(model._meta.db_table, field)
        found.append((column, connection.ops.get_db_converters(column) + column.get_db_converters(connection)))
    return [field.attname for field in fields], found
