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
    return usage_and_taken(tenant)[0]


def usage_and_taken(tenant: Tenant, names=(), labels=()) -> tuple[dict[str, int], set[str], set[str]]:
    """The tenant's usage (as `tenant_resource_usage`), and which of `names` and of the DNS
    `labels` its live instances hold already: one read of its rows, for a create under the
    quota row lock."""
    params = {
        "tenant": tenant.pk,
        "deleted": InstanceState.DELETED,
        "resizing": InstanceState.RESIZING,
        "names": list(names),
        "labels": list(labels),
    }
    with connection.cursor() as cursor:
        cursor.execute(_usage_sql(), params)
        instances, *used, names_taken, labels_taken = cursor.fetchone()
    usage = {"instances": instances, **{name: int(value) for name, value in zip(RESOURCES, used, strict=True)}}
    return usage, set(names_taken or ()), set(labels_taken or ())


RESOURCES = ("vcpus", "memory_mb", "disk_gb")


@cache
def _usage_sql() -> str:
    """Each resource: the live rows' sum, plus how much more the resizes in flight have claimed
    than their rows show. `pending.size` is null once a failed resize gave its claim back: a
    null counts as nothing (GREATEST skips nulls, SUM too). Then the live rows' names and DNS
    labels among those asked for (null when none is)."""
    meta, quote = Instance._meta, connection.ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    def excess(name: str) -> str:
        new = f"({column('pending')} -> 'size' ->> '{name}')::integer"
        return f"SUM(GREATEST({new} - {column(name)}, 0)) FILTER (WHERE {column('state')} = %(resizing)s)"

    sums = ", ".join(f"COALESCE(SUM({column(name)}), 0) + COALESCE({excess(name)}, 0)" for name in RESOURCES)
    taken = ", ".join(
        f"ARRAY_AGG(DISTINCT {column(field)}) FILTER (WHERE {column(field)} = ANY(%({asked})s::text[]))"
        for field, asked in (("name", "names"), ("dns_label", "labels"))
    )
    where = f"{column('tenant')} = %(tenant)s AND {column('state')} <> %(deleted)s"
    return f"SELECT COUNT(*), {sums}, {taken} FROM {quote(meta.db_table)} WHERE {where}"  # noqa: S608 (names from the model)


def images_visible_filter(tenant: Tenant) -> Q:
    """Public images that are ready, and the tenant's own private ones (its snapshots, in
    whatever state: the tenant waits for them). An operator's import still downloading, or
    one that failed, is nobody's business but the operators'."""
    return Q(visibility=Image.Visibility.PUBLIC, state=Image.State.ACTIVE) | Q(tenant=tenant)
