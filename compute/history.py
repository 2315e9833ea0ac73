"""The exact history of instance states and host status, written as the changes happen."""

from __future__ import annotations

from datetime import datetime

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
