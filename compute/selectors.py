"""Reads shared by the API, the UI and the services."""

from __future__ import annotations

from django.db.models import Count, F, IntegerField, Q, QuerySet, Sum, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Greatest

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
        instances=Count("id"),
        # Aliases apart from the fields' names: the excess refers to the fields.
        **{f"sum_{name}": Sum(name) for name in RESOURCES},
        **{f"resizing_{name}": _resize_excess(name) for name in RESOURCES},
    )
    usage = {"instances": totals["instances"]}
    for name in RESOURCES:
        usage[name] = int(totals[f"sum_{name}"] or 0) + int(totals[f"resizing_{name}"] or 0)
    return usage


RESOURCES = ("vcpus", "memory_mb", "disk_gb")


def _resize_excess(name: str) -> Sum:
    """How much more of `name` the resizes in flight have claimed than their rows show, in the
    same query as the totals. `pending.size` is null once a failed resize gave its claim back:
    a null counts as nothing (GREATEST skips nulls, SUM too)."""
    new = Cast(KT(f"pending__size__{name}"), IntegerField())
    return Sum(Greatest(new - F(name), Value(0)), filter=Q(state=InstanceState.RESIZING))


def images_visible_filter(tenant: Tenant) -> Q:
    """Public images that are ready, and the tenant's own private ones (its snapshots, in
    whatever state: the tenant waits for them). An operator's import still downloading, or
    one that failed, is nobody's business but the operators'."""
    return Q(visibility=Image.Visibility.PUBLIC, state=Image.State.ACTIVE) | Q(tenant=tenant)
