"""The exact history of instance states and host status, written as the changes happen."""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone

from compute.models import Host, HostStatusLog, Instance, InstanceStateLog
from compute.transitions import SETTLED_STATES


def record_state(instance_id, state: str, *, cause: str = "tenant", at: datetime | None = None) -> None:
    """Log that the instance settled into `state` (a no-op for in-flight states)."""
    if state not in SETTLED_STATES:  # a rescued guest is billed as running (billing.usage)
        return
    row = Instance.objects.filter(pk=instance_id).values("flavor_id", "vcpus", "memory_mb", "disk_gb").first()
    if row is None:
        return
    InstanceStateLog.objects.create(instance_id=instance_id, at=at or timezone.now(), state=state, cause=cause, **row)


# The state log row copies these from the instance as it settled.
_SIZE_COLUMNS = ("flavor_id", "vcpus", "memory_mb", "disk_gb")


def settle_statement(instance_id, from_state: str, to_state: str, *, cause: str, fields: dict) -> tuple[str, list]:
    """One statement that moves the instance from `from_state` to `to_state` (setting
    `fields`, model field names to values) and, if it moved and the state is a settled one,
    logs it as `record_state` does; it returns the number of rows moved. A single statement is
    atomic without a transaction around it: the state and its log row commit together, in one
    round trip instead of five."""
    meta = Instance._meta
    quote = connection.ops.quote_name
    assignments, params = [], []
    for name, value in {"state": to_state, **fields}.items():
        field = meta.get_field(name)
        if field.remote_field and hasattr(value, "prepare_database_save"):  # a row, as update() takes
            value = value.prepare_database_save(field)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    pk = meta.pk
    update = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608 (names from the model)
        f"WHERE {quote(pk.column)} = %s AND {quote(meta.get_field('state').column)} = %s "
        f"RETURNING {quote(pk.column)} AS id, {', '.join(quote(meta.get_field(c).column) for c in _SIZE_COLUMNS)}"
    )
    params += [pk.get_db_prep_value(instance_id, connection), from_state]
    if to_state not in SETTLED_STATES:
        return f"WITH moved AS ({update}) SELECT count(*) FROM moved", params  # noqa: S608
    log = InstanceStateLog._meta
    columns = ["instance_id", "at", "state", "cause", *_SIZE_COLUMNS]
    sizes = ", ".join(quote(meta.get_field(c).column) for c in _SIZE_COLUMNS)
    insert = (
        f"INSERT INTO {quote(log.db_table)} ({', '.join(quote(log.get_field(c).column) for c in columns)}) "  # noqa: S608
        f"SELECT id, %s, %s, %s, {sizes} FROM moved"
    )
    params += [log.get_field("at").get_db_prep_save(timezone.now(), connection), to_state, cause]
    return f"WITH moved AS ({update}), logged AS ({insert}) SELECT count(*) FROM moved", params  # noqa: S608


def record_host_status(host_id, status: str, *, at: datetime | None = None) -> None:
    HostStatusLog.objects.create(host_id=host_id, at=at or timezone.now(), status=status)


def set_host_status(host_ids, status: str, *, only_from: list[str] | None = None) -> list:
    """Change hosts' status and log each change that happened."""
    changed = []
    for host_id in host_ids:
        hosts = Host.objects.filter(pk=host_id).exclude(status=status)
        if only_from is not None:
            hosts = hosts.filter(status__in=only_from)
        if hosts.update(status=status):
            record_host_status(host_id, status)
            changed.append(host_id)
    return changed
