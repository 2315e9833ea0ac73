"""Row locks, always taken in this order within a transaction: tenant quota -> host -> instance.

Keeping every lock here, in one order, is what keeps create, resize, delete and the workers
from deadlocking each other.
"""

from __future__ import annotations

from compute.models import Host, Instance
from tenants.models import Quota, Tenant


def lock_quota(tenant: Tenant) -> Quota:
    return Quota.objects.select_for_update().get(tenant=tenant)


def lock_host(host_id) -> Host:
    return Host.objects.select_for_update().get(pk=host_id)


def lock_instance(instance_id) -> Instance:
    return Instance.objects.select_for_update().select_related("host").get(pk=instance_id)
