"""Reads shared by the API, the UI and the services."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet, Sum

from compute.models import Image, Instance, InstanceState
from tenants.models import Tenant


def live_instances(tenant: Tenant) -> QuerySet[Instance]:
    return Instance.objects.filter(tenant=tenant).exclude(state=InstanceState.DELETED)


def tenant_resource_usage(tenant: Tenant) -> dict[str, int]:
    """What the tenant's live instances hold against each quota limit.

    An instance being resized counts at the larger of its two sizes: the new one is already
    promised (and claimed on its host) but its row changes only when the task has run.
    """
    totals = live_instances(tenant).aggregate(
        instances=Count("id"), vcpus=Sum("vcpus"), memory_mb=Sum("memory_mb"), disk_gb=Sum("disk_gb")
    )
    usage = {name: int(value or 0) for name, value in totals.items()}
    resizing = live_instances(tenant).filter(state=InstanceState.RESIZING)
    for instance in resizing.only("vcpus", "memory_mb", "disk_gb", "pending"):
        new = instance.pending.get("size")  # None once a failed resize gave its claim back
        for name in ("vcpus", "memory_mb", "disk_gb") if new else ():
            usage[name] += max(new[name] - getattr(instance, name), 0)
    return usage


def images_visible_filter(tenant: Tenant) -> Q:
    """Public images that are ready, and the tenant's own private ones (its snapshots, in
    whatever state: the tenant waits for them). An operator's import still downloading, or
    one that failed, is nobody's business but the operators'."""
    return Q(visibility=Image.Visibility.PUBLIC, state=Image.State.ACTIVE) | Q(tenant=tenant)
