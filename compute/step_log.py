"""Writing the action log's step rows: one round trip per step instead of two.

Each step's row is inserted as "running" when the step begins, so the pages, the API's
progress and the reaper see a step in flight, and a worker killed inside it leaves the row for
the next task of the instance to mark as interrupted. A step that ends well is not written
at once: its status and duration wait for the next write of the same task, the next step's
INSERT, and go in the same statement (an UPDATE in a WITH clause), as does the marking of the
steps a dead worker left running, which each task makes before its first step (see
`interrupt_stale`). Whatever is still waiting
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
from dataclasses import dataclass

from django.db import connection
from django.db.models.signals import post_save

from base import rows
from compute.models import Instance, InstanceAction

FINISH_FIELDS = frozenset({"status", "error", "duration_ms"})


@dataclass
class _Write:
    sql: str
    params: list
    finished: InstanceAction | None = None  # the row whose post_save is sent once written


# The writes of the current task that wait for its next one; None outside a task's fenced
# work, where every write is made at once.
_waiting: contextvars.ContextVar[list[_Write] | None] = contextvars.ContextVar("waiting", default=None)


@contextmanager
def deferring():
    """Within it, small writes ride along with the next INSERT; all are made at its end."""
    token = _waiting.set([])
    try:
        yield
    finally:
        flush()
        _waiting.reset(token)


def _table() -> str:
    return InstanceAction._meta.db_table


def _take() -> list[_Write]:
    waiting = _waiting.get()
    if not waiting:
        return []
    taken = list(waiting)
    waiting.clear()
    return taken


def _with(writes: list[_Write], last_sql: str, last_params: list) -> tuple[str, list]:
    """One statement: each write a data-modifying WITH clause (each runs exactly once), then the last."""
    if not writes:
        return last_sql, last_params
    clauses = ", ".join(f"earlier_{n} AS ({w.sql})" for n, w in enumerate(writes))
    params = [p for w in writes for p in w.params] + last_params
    if last_sql.startswith("WITH "):  # its own clauses follow these
        return f"WITH {clauses}, {last_sql.removeprefix('WITH ')}", params
    return f"WITH {clauses} {last_sql}", params


def _written(writes: list[_Write]) -> None:
    for write in writes:
        if write.finished is not None:
            post_save.send(
                sender=InstanceAction,
                instance=write.finished,
                created=False,
                update_fields=FINISH_FIELDS,
                raw=False,
                using="default",
            )


def _defer_or_run(write: _Write) -> None:
    waiting = _waiting.get()
    if waiting is not None:
        waiting.append(write)
        return
    with connection.cursor() as cursor:
        cursor.execute(write.sql, write.params)
    _written([write])


def interrupt_stale(instance_id, error: str) -> None:
    """Mark the instance's steps still "running" as failed with `error`: a worker died in them
    (the caller holds the instance's lease, so no one else runs its steps now). Deferred like a
    finish: it goes out with the task's first step row, in the same statement."""
    _defer_or_run(
        _Write(
            f"UPDATE {_table()} SET status = %s, error = %s WHERE instance_id = %s AND status = %s",  # noqa: S608
            [InstanceAction.Status.FAILED, error, instance_id, InstanceAction.Status.RUNNING],
        )
    )


def start(row: InstanceAction, *, while_state: str | None = None) -> bool:
    """Insert a step's row (status running), with the writes waiting, in one statement.
    `while_state`: only if the instance is still in that state (False: it is not, and no row
    was inserted; the waiting writes were made all the same)."""
    only_if = None
    if while_state is not None:
        instance = Instance._meta
        only_if = (
            f"EXISTS (SELECT 1 FROM {instance.db_table} WHERE {instance.pk.column} = %s AND state = %s)",  # noqa: S608
            [row.instance_id, while_state],
        )
    insert, values = rows.insert_sql(row, only_if=only_if)
    earlier = _take()
    sql, params = _with(earlier, insert, values)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchone()
    _written(earlier)
    if inserted is None:
        return False
    rows.inserted(row, inserted[0])
    return True


def finish(row: InstanceAction, *, at_once: bool) -> None:
    """Record a step's end (status, error and duration set on the row): at once, or with the
    next write when inside `deferring()` and `at_once` is false."""
    if at_once:
        flush()
        row.save(update_fields=list(FINISH_FIELDS))
        return
    _defer_or_run(
        _Write(
            f"UPDATE {_table()} SET status = %s, error = %s, duration_ms = %s WHERE id = %s",  # noqa: S608
            [row.status, row.error, row.duration_ms, row.id],
            finished=row,
        )
    )


def with_waiting(sql: str, params: list):
    """Run a statement with the writes still waiting ahead of it, as WITH clauses of the same
    statement (so they commit with it, or not at all); its first row back."""
    earlier = _take()
    sql, params = _with(earlier, sql, params)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    _written(earlier)
    return row


def flush() -> None:
    """Make the writes still waiting (before the state settles, or as the task ends)."""
    writes = _take()
    if not writes:
        return
    sql, params = _with(writes[:-1], writes[-1].sql, writes[-1].params)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    _written(writes)
