"""Reads shared by the API, the UI and the services."""

from __future__ import annotations

from functools import cache

from django.db import connection
from django.db.models import Q, QuerySet

from compute.models import Image, Instance, InstanceState
from tenants.models import Tenant


def live_instances(tenant: Tenant) -> QuerySet[Instance]:
    return Instance.objects.filter(tenant=tenant).exclude(state=InstanceState.DELETED)


def tenant_resource_usage(tenant: Tenant) -> dict[str, int]:
    """What the tenant's live instances hold against each quota limit.

    An instance being resized counts at the larger of its two sizes: the new one is already
    promised (and claimed on its host) but its row changes only when the task has run. Every
    create reads this under the tenant's quota row lock, so the query is written out once
    (`_usage_sql`) rather than built by the ORM each time.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _usage_sql(), {"tenant": tenant.pk, "deleted": InstanceState.DELETED, "resizing": InstanceState.RESIZING}
        )
        instances, *used = cursor.fetchone()
    return {"instances": instances, **{name: int(value) for name, value in zip(RESOURCES, used, strict=True)}}


RESOURCES = ("vcpus", "memory_mb", "disk_gb")


@cache
def _usage_sql() -> str:
    """Each resource: the live rows' sum, plus how much more the resizes in flight have claimed
    than their rows show. `pending.size` is null once a failed resize gave its claim back: a
    null counts as nothing (GREATEST skips nulls, SUM too)."""
    meta, quote = Instance._meta, connection.ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    def excess(name: str) -> str:
        new = f"({column('pending')} -> 'size' ->> '{name}')::integer"
        return f"SUM(GREATEST({new} - {column(name)}, 0)) FILTER (WHERE {column('state')} = %(resizing)s)"

    sums = ", ".join(f"COALESCE(SUM({column(name)}), 0) + COALESCE({excess(name)}, 0)" for name in RESOURCES)
    where = f"{column('tenant')} = %(tenant)s AND {column('state')} <> %(deleted)s"
    return f"SELECT COUNT(*), {sums} FROM {quote(meta.db_table)} WHERE {where}"  # noqa: S608 (names from the model)


def images_visible_filter(tenant: Tenant) -> Q:
    """Public images that are ready, and the tenant's own private ones (its snapshots, in
    whatever state: the tenant waits for them). An operator's import still downloading, or
    one that failed, is nobody's business but the operators'."""
    return Q(visibility=Image.Visibility.PUBLIC, state=Image.State.ACTIVE) | Q(tenant=tenant)
