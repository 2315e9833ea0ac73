"""Reads shared by the API, the UI and the services."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet, Sum

from compute.models import Image, Instance, InstanceState
from tenants.models import Tenant


def live_instances(tenant: Tenant) -> QuerySet[Instance]:
    return Instance.objects.filter(tenant=tenant).exclude(state=InstanceState.DELETED)


def tenant_resource_usage(tenant: Tenant) -> dict[str, int]:
    """What the tenant's live instances hold against each quota limit."""
    totals = live_instances(tenant).aggregate(
        instances=Count("id"), vcpus=Sum("vcpus"), memory_mb=Sum("memory_mb"), disk_gb=Sum("disk_gb")
    )
    return {name: int(value or 0) for name, value in totals.items()}


def images_visible_filter(tenant: Tenant) -> Q:
    """Public images, and the tenant's own private ones."""
    return Q(visibility=Image.Visibility.PUBLIC) | Q(tenant=tenant)
