"""Row locks, always taken in this order within a transaction: tenant quota -> (the bulk
create lock) -> host -> instance.

Keeping every lock here, in one order, is what keeps create, resize, delete and the workers
from deadlocking each other.
"""

from __future__ import annotations

from django.db import connection

from compute.models import Host, Instance
from tenants.models import Quota, Tenant


def lock_quota(tenant: Tenant) -> Quota:
    return Quota.objects.select_for_update().get(tenant=tenant)


# The PostgreSQL advisory lock of bulk creates ("bulk" in ASCII).
BULK_CREATE_LOCK = 0x62756C6B


def lock_bulk_creates() -> None:
    """One bulk create at a time, until its transaction ends. A bulk create claims several
    hosts, each the best one at that moment by its own view; two at once could each hold a host
    the other claims next, and deadlock. Single creates are left alone: they claim one host (a
    second only when the first one's address pool is full)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [BULK_CREATE_LOCK])


def lock_host(host_id) -> Host:
    return Host.objects.select_for_update().get(pk=host_id)


def lock_instance(instance_id) -> Instance:
    return Instance.objects.select_for_update().select_related("host").get(pk=instance_id)
