"""Writing the action log's step rows: one round trip per step instead of two.

Each step's row is inserted as "running" when the step begins, so the pages, the API's
progress and the reaper see a step in flight, and a worker killed inside it leaves the row for
`operations.interrupt_stale_steps` to mark as interrupted. A step that ends well is not written
at once: its status and duration wait for the next write of the same task, the next step's
INSERT, and go in the same statement (an UPDATE in a WITH clause). Whatever is still waiting
when the task's fenced work ends, or before its state settles, is written then. A step that
fails is written at once. A worker killed between a step's end and the next write leaves that
step "running", and it is marked interrupted on resumption and run again, as any step a
worker died in (every step is idempotent).

The rows go through Django's model signals as before (the request id stamped on a new row, the
step duration metric on a finished one), sent here since the SQL is written by hand.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager

from django.db import connection
from django.db.models.signals import post_save, pre_save

from compute.models import InstanceAction

FINISH_FIELDS = frozenset({"status", "error", "duration_ms"})

# The finished step rows of the current task not written yet; None outside a task's fenced
# work, where every row is written at once.
_unwritten: contextvars.ContextVar[list[InstanceAction] | None] = contextvars.ContextVar("unwritten", default=None)

_FINISH = "UPDATE {table} SET status = %s, error = %s, duration_ms = %s WHERE id = %s"


@contextmanager
def deferring():
    """Within it, finished steps ride along with the next write; all are written at its end."""
    token = _unwritten.set([])
    try:
        yield
    finally:
        flush()
        _unwritten.reset(token)


def _finish_sql(rows: list[InstanceAction]) -> tuple[list[str], list]:
    table = InstanceAction._meta.db_table
    statements, params = [], []
    for row in rows:
        statements.append(_FINISH.format(table=table))
        params += [row.status, row.error, row.duration_ms, row.id]
    return statements, params


def _finished(rows: list[InstanceAction]) -> None:
    for row in rows:
        post_save.send(
            sender=InstanceAction, instance=row, created=False, update_fields=FINISH_FIELDS, raw=False, using="default"
        )


def start(row: InstanceAction) -> None:
    """Insert a step's row (status running), with the finished rows waiting, in one statement."""
    waiting = _unwritten.get()
    earlier = list(waiting) if waiting else []
    pre_save.send(sender=InstanceAction, instance=row, raw=False, using="default", update_fields=None)
    fields = [f for f in InstanceAction._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
    statements, params = _finish_sql(earlier)
    ctes = ", ".join(f"finished_{n} AS ({sql})" for n, sql in enumerate(statements))
    insert = (
        f"INSERT INTO {InstanceAction._meta.db_table} ({columns}) "  # noqa: S608 (names from the model)
        f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {ctes} {insert}" if ctes else insert, params + values)
        row.id = cursor.fetchone()[0]
    row._state.adding = False
    row._state.db = "default"
    if waiting:
        waiting.clear()
    post_save.send(sender=InstanceAction, instance=row, created=True, update_fields=None, raw=False, using="default")
    _finished(earlier)


def finish(row: InstanceAction, *, at_once: bool) -> None:
    """Record a step's end (status, error and duration set on the row): at once, or with the
    next write when inside `deferring()` and `at_once` is false."""
    waiting = _unwritten.get()
    if waiting is not None and not at_once:
        waiting.append(row)
        return
    flush()
    row.save(update_fields=list(FINISH_FIELDS))


def flush() -> None:
    """Write the finished rows still waiting (before the state settles, or the task ends)."""
    waiting = _unwritten.get()
    if not waiting:
        return
    rows = list(waiting)
    waiting.clear()
    statements, params = _finish_sql(rows)
    with connection.cursor() as cursor:
        if len(statements) == 1:
            cursor.execute(statements[0], params)
        else:
            ctes = ", ".join(f"finished_{n} AS ({sql})" for n, sql in enumerate(statements[1:]))
            cursor.execute(f"WITH {ctes} {statements[0]}", params[4:] + params[:4])
    _finished(rows)
