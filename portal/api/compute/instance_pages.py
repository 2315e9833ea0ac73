"""The lean read path of the busiest GET, `/api/v1/instances?cursor=`: one written-out query.

The ORM built and compiled the page's query on every request, and loaded its timestamps
through Django's pure-Python loader: together about half of the list's own time (issue 19,
docs/performance.md). `InstancePageSource` stands where the queryset stood: DRF's cursor
pagination (`NewestFirstCursor`) drives it exactly as it drives a queryset (`order_by`,
`filter` on the position, a slice), so paging, cursors and links are unchanged, and each
slice runs one query made of fragments fixed at import. It reads the columns
`SUMMARY_COLUMNS` names, for `instance_summary` to shape as before.

Scoping is `tenants.access.scoped_tenant_id`, the rule `scoped` applies to querysets. Every
value goes in as a query parameter; the position is parsed here first, so a cursor whose
position is no timestamp is the same 400 as before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection
from psycopg.types.datetime import TimestamptzLoader

from compute.models import Flavor, Host, Image, Instance, InstanceState
from portal.api.compute.presenters import SUMMARY_COLUMNS
from tenants.models import Tenant

# What each SUMMARY_COLUMNS entry reads, table aliased.
JOINED = {
    "image__name": ("m", Image, "name"),
    "flavor__name": ("f", Flavor, "name"),
    "host__status": ("h", Host, "status"),
    "tenant__slug": ("t", Tenant, "slug"),
}


JOINED_BY = ("image", "flavor", "host", "tenant")  # the instance's foreign keys


def _column(alias: str, model, name: str) -> str:
    return f'{alias}."{model._meta.get_field(name).column}"'


# The instance's own columns the query filters or orders on.
COLUMN = {name: _column("i", Instance, name) for name in ("id", "created_at", "state", "name", *JOINED_BY)}


def _select() -> str:
    columns = [_column(*JOINED[name]) if name in JOINED else _column("i", Instance, name) for name in SUMMARY_COLUMNS]
    return (
        f"SELECT {', '.join(columns)} "  # noqa: S608 - model metadata only
        f'FROM "{Instance._meta.db_table}" i '
        f'JOIN "{Image._meta.db_table}" m ON m."id" = {COLUMN["image"]} '
        f'LEFT JOIN "{Flavor._meta.db_table}" f ON f."id" = {COLUMN["flavor"]} '
        f'JOIN "{Host._meta.db_table}" h ON h."id" = {COLUMN["host"]} '
        f'JOIN "{Tenant._meta.db_table}" t ON t."id" = {COLUMN["tenant"]} '
    )


SELECT = _select()
CREATED, ID, STATE = COLUMN["created_at"], COLUMN["id"], COLUMN["state"]
ORDER = {"-created_at": f"{CREATED} DESC", "created_at": f"{CREATED} ASC", "-id": f"{ID} DESC", "id": f"{ID} ASC"}
COMPARE = {"created_at__lt": f"{CREATED} < %s", "created_at__gt": f"{CREATED} > %s"}


@dataclass(frozen=True)
class ListFilters:
    """The list's query parameters, checked (`portal.api.compute.instances`)."""

    state: str | None = None  # None: every state but deleted
    name: str | None = None  # part of the name, any case
    image: str | None = None
    flavor: str | None = None


@dataclass(frozen=True)
class InstancePageSource:
    """One tenant's instances as DRF's cursor pagination reads a queryset; see the module."""

    tenant_id: object
    filters: ListFilters
    ordering: tuple[str, ...] = ()
    position: tuple[str, datetime] | None = None

    def order_by(self, *fields: str) -> InstancePageSource:
        return replace(self, ordering=tuple(fields))

    def filter(self, **kwargs) -> InstancePageSource:
        ((lookup, value),) = kwargs.items()
        if lookup not in COMPARE:
            raise TypeError(f"no such filter on an instance page: {lookup}")
        return replace(self, position=(lookup, _timestamp(value)))

    def __getitem__(self, window: slice) -> list[dict]:
        sql, params = self._where()
        sql += " ORDER BY " + ", ".join(ORDER[field] for field in self.ordering)
        sql += " LIMIT %s OFFSET %s"
        params += [window.stop - window.start, window.start]
        with connection.cursor() as cursor:
            # psycopg's own timestamptz loader (its C one) in place of Django's Python
            # subclass: the same aware UTC datetimes, as the session's time zone is UTC.
            cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
            cursor.execute(sql, params)
            return [dict(zip(SUMMARY_COLUMNS, row, strict=True)) for row in cursor.fetchall()]

    def _where(self) -> tuple[str, list]:
        clauses, params = [f"{COLUMN['tenant']} = %s"], [self.tenant_id]
        if self.filters.state is None:
            clauses.append(f"{STATE} <> %s")
            params.append(InstanceState.DELETED)
        else:
            clauses.append(f"{STATE} = %s")
            params.append(self.filters.state)
        if self.filters.name:
            # As the ORM's icontains on PostgreSQL: LIKE's wildcards in the value are literal.
            clauses.append(f"UPPER({COLUMN['name']}::text) LIKE UPPER(%s)")
            params.append(f"%{connection.ops.prep_for_like_query(self.filters.name)}%")
        for field in ("image", "flavor"):
            if (value := getattr(self.filters, field)) is not None:
                clauses.append(f"{COLUMN[field]} = %s")
                params.append(value)
        if self.position is not None:
            lookup, when = self.position
            clauses.append(COMPARE[lookup])
            params.append(when)
        return SELECT + "WHERE " + " AND ".join(clauses), params


def _timestamp(value: str) -> datetime:
    """A cursor's position, as DRF wrote it (`str()` of an aware datetime)."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValidationError("not a timestamp", code="invalid")
    return parsed
