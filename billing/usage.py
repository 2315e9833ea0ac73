"""From the exact state history and the meter samples to hourly usage per instance.

Running and stopped time come only from compute's InstanceStateLog: an instance is billed as
running from the moment it settled into running until it settled into anything else, as
stopped while it is stopped, and not at all while building, in error or deleted (in-flight
states keep the class of the state they left). A continuous running stretch shorter than the
price list's minimum is billed as the minimum, in the hour it began.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import OuterRef, Q, Subquery, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing.models import AggregatedHour, MeterSample, UsageRecord
from compute.models import Instance, InstanceState, InstanceStateLog

HOUR = timedelta(hours=1)
# A rescued instance runs (the rescue system, on the instance's own size): it bills as running.
CLASS_OF = {InstanceState.RUNNING: "running", InstanceState.RESCUE: "running", InstanceState.STOPPED: "stopped"}


@dataclass(frozen=True)
class Segment:
    start: datetime
    end: datetime
    kind: str  # running, stopped or "" (not billed)
    size: tuple  # (flavor_id or None, vcpus, memory_mb, disk_gb)


@dataclass
class HourUsage:
    instance_id: object
    tenant_id: object
    hour: datetime
    running: int = 0
    billable: int = 0
    stopped: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    cpu_ns: int = 0
    sizes: dict = field(default_factory=dict)  # size -> [running, billable, stopped]

    def add(self, size: tuple, kind: str, seconds: int, billable: int = 0) -> None:
        slot = self.sizes.setdefault(size, [0, 0, 0])
        if kind == "running":
            self.running += seconds
            self.billable += seconds + billable
            slot[0] += seconds
            slot[1] += seconds + billable
        elif kind == "stopped":
            self.stopped += seconds
            slot[2] += seconds
        elif billable:
            self.billable += billable
            slot[1] += billable

    def segments_json(self) -> list[dict]:
        return [
            {
                "flavor": str(s[0]) if s[0] else None,
                "vcpus": s[1],
                "memory_mb": s[2],
                "disk_gb": s[3],
                "running": v[0],
                "billable": v[1],
                "stopped": v[2],
            }
            for s, v in self.sizes.items()
        ]


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def segments(logs: list, until: datetime) -> list[Segment]:
    """The instance's life as consecutive segments from its state log (sorted by time)."""
    result = []
    for row, following in zip(logs, [*logs[1:], None], strict=True):
        end = following.at if following is not None else until
        if end > row.at:
            size = (row.flavor_id, row.vcpus, row.memory_mb, row.disk_gb)
            result.append(Segment(row.at, end, CLASS_OF.get(row.state, ""), size))
    return result


def minimum_topups(segs: list[Segment], minimum: int, until: datetime) -> list[tuple[datetime, tuple, int]]:
    """(when, size, extra seconds) for each finished running stretch shorter than `minimum`."""
    topups = []
    stretch: list[Segment] = []
    for seg in [*segs, None]:
        if seg is not None and seg.kind == "running" and (not stretch or stretch[-1].end == seg.start):
            stretch.append(seg)
            continue
        if stretch and stretch[-1].end < until:  # finished before `until`
            length = int((stretch[-1].end - stretch[0].start).total_seconds())
            if length < minimum:
                topups.append((stretch[0].start, stretch[0].size, minimum - length))
        stretch = [seg] if seg is not None and seg.kind == "running" else []
    return topups


def compute_usage(
    *, start: datetime, end: datetime, minimum_seconds: int, tenant=None, instance_ids=None
) -> list[HourUsage]:
    """Hourly usage of every instance alive in [start, end), computed, not stored."""
    instances = Instance.objects.filter(created_at__lt=end).filter(
        Q(deleted_at__isnull=True) | Q(deleted_at__gte=start)
    )
    if tenant is not None:
        instances = instances.filter(tenant=tenant)
    if instance_ids is not None:
        instances = instances.filter(pk__in=instance_ids)
    # The state each instance was in when the window opened, then every change inside it.
    last_before = InstanceStateLog.objects.filter(instance=OuterRef("pk"), at__lt=start).order_by("-at", "-id")
    heads = dict(instances.annotate(head=Subquery(last_before.values("id")[:1])).values_list("id", "head"))
    tenant_of = dict(instances.values_list("id", "tenant_id"))
    # Read `minimum_seconds` past the window so a short stretch that starts inside it and ends
    # just after is seen finished, and gets its top-up here, in the hour it began.
    horizon = end + timedelta(seconds=minimum_seconds)
    logs = defaultdict(list)
    rows = InstanceStateLog.objects.filter(
        Q(pk__in=[h for h in heads.values() if h]) | Q(instance_id__in=list(heads), at__gte=start, at__lt=horizon)
    ).order_by("instance_id", "at", "id")
    for row in rows:
        logs[row.instance_id].append(row)

    usage: dict[tuple, HourUsage] = {}

    def slot(instance_id, hour) -> HourUsage:
        key = (instance_id, hour)
        if key not in usage:
            usage[key] = HourUsage(instance_id, tenant_of[instance_id], hour)
        return usage[key]

    for instance_id, rows_of in logs.items():
        segs = segments(rows_of, horizon)
        for seg in segs:
            lo, hi = max(seg.start, start), min(seg.end, end)
            hour = floor_hour(lo)
            while lo < hi:
                upto = min(hour + HOUR, hi)
                if seg.kind:
                    slot(instance_id, hour).add(seg.size, seg.kind, int((upto - lo).total_seconds()))
                lo, hour = upto, hour + HOUR
        for when, size, extra in minimum_topups(segs, minimum_seconds, horizon):
            if start <= when < end:
                slot(instance_id, floor_hour(when)).add(size, "", 0, billable=extra)

    traffic = (
        MeterSample.objects.filter(instance_id__in=list(heads), taken_at__gte=start, taken_at__lt=end)
        .annotate(hour=TruncHour("taken_at"))
        .values("instance_id", "hour")
        .annotate(rx=Sum("rx_delta"), tx=Sum("tx_delta"), cpu=Sum("cpu_ns_delta"))
    )
    for row in traffic:
        entry = slot(row["instance_id"], row["hour"])
        entry.rx_bytes, entry.tx_bytes, entry.cpu_ns = int(row["rx"]), int(row["tx"]), int(row["cpu"])
    return sorted(usage.values(), key=lambda u: (str(u.instance_id), u.hour))


def aggregate(*, start: datetime, end: datetime, minimum_seconds: int, tenant=None) -> int:
    """Store the hourly usage of [start, end) as UsageRecords; rerunning changes nothing.

    A run over every instance notes the whole hours it covered in AggregatedHour.
    """
    now = timezone.now()
    computed = compute_usage(start=start, end=end, minimum_seconds=minimum_seconds, tenant=tenant)
    records = [
        UsageRecord(
            instance_id=u.instance_id,
            tenant_id=u.tenant_id,
            hour=u.hour,
            running_seconds=u.running,
            billable_running_seconds=u.billable,
            stopped_seconds=u.stopped,
            rx_bytes=u.rx_bytes,
            tx_bytes=u.tx_bytes,
            cpu_seconds=Decimal(u.cpu_ns) / Decimal(10**9),
            segments=u.segments_json(),
        )
        for u in computed
    ]
    UsageRecord.objects.bulk_create(
        records,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["instance", "hour"],
        update_fields=[
            "running_seconds",
            "billable_running_seconds",
            "stopped_seconds",
            "rx_bytes",
            "tx_bytes",
            "cpu_seconds",
            "segments",
        ],
    )
    if tenant is None:
        AggregatedHour.objects.bulk_create(
            [AggregatedHour(hour=hour, aggregated_at=now) for hour in whole_hours(start, end)],
            update_conflicts=True,
            unique_fields=["hour"],
            update_fields=["aggregated_at"],
        )
    return len(records)


def whole_hours(start: datetime, end: datetime) -> list[datetime]:
    first = floor_hour(start)
    if first < start:
        first += HOUR
    hours = []
    while first + HOUR <= end:
        hours.append(first)
        first += HOUR
    return hours


def settle_time(minimum_seconds: int) -> timedelta:
    """How long after an hour ends its records can still change: a running stretch that began
    in it gets its minimum top-up once the stretch is `minimum_seconds` old, and its last
    samples are stored up to a metering interval later; five minutes of slack on top."""
    return timedelta(seconds=max(minimum_seconds, settings.METERING_SECONDS)) + timedelta(minutes=5)


def aggregate_unsettled(*, start: datetime, end: datetime, minimum_seconds: int) -> int:
    """Aggregate the hours of [start, end) whose stored records are not final yet, as runs of
    consecutive hours; the hourly task has usually made most of them final already."""
    settle = settle_time(minimum_seconds)
    noted = AggregatedHour.objects.filter(hour__gte=start, hour__lt=end).values_list("hour", "aggregated_at")
    final = {hour for hour, at in noted if at >= hour + HOUR + settle}
    stored, run = 0, []
    for hour in [*whole_hours(start, end), None]:
        if hour is not None and hour not in final and (not run or run[-1] + HOUR == hour):
            run.append(hour)
            continue
        if run:
            stored += aggregate(start=run[0], end=run[-1] + HOUR, minimum_seconds=minimum_seconds)
        run = [hour] if hour is not None and hour not in final else []
    return stored


@dataclass
class InstanceMonth:
    """What an instance's stored hours of a period add up to."""

    tenant_id: object
    sizes: dict = field(default_factory=dict)  # (flavor id str or None, vcpus, memory_mb, disk_gb) -> [r, b, s]
    tx_bytes: int = 0


# The sums are made in PostgreSQL: a month of a large fleet is millions of hourly rows, and
# only one row per instance and size comes back.
_SIZES_SQL = """
SELECT r.instance_id, r.tenant_id, s.flavor, s.vcpus, s.memory_mb, s.disk_gb,
       SUM(s.running), SUM(s.billable), SUM(s.stopped)
FROM billing_usagerecord r
CROSS JOIN LATERAL jsonb_to_recordset(r.segments) AS s(
    flavor text, vcpus integer, memory_mb integer, disk_gb integer,
    running bigint, billable bigint, stopped bigint)
WHERE r.hour >= %s AND r.hour < %s {where}
GROUP BY r.instance_id, r.tenant_id, s.flavor, s.vcpus, s.memory_mb, s.disk_gb
"""
_TRAFFIC_SQL = """
SELECT r.instance_id, r.tenant_id, SUM(r.tx_bytes)
FROM billing_usagerecord r
WHERE r.hour >= %s AND r.hour < %s {where}
GROUP BY r.instance_id, r.tenant_id
"""


def stored_usage(*, start: datetime, end: datetime, tenant_ids=None, instance_ids=None) -> dict:
    """instance id -> InstanceMonth, from the UsageRecords of [start, end)."""
    where, params = "", [start, end]
    if tenant_ids is not None:
        where += " AND r.tenant_id = ANY(%s)"
        params.append(list(tenant_ids))
    if instance_ids is not None:
        where += " AND r.instance_id = ANY(%s)"
        params.append(list(instance_ids))
    result: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(_TRAFFIC_SQL.format(where=where), params)
        for instance_id, tenant_id, tx in cursor.fetchall():
            result[instance_id] = InstanceMonth(tenant_id, {}, int(tx or 0))
        cursor.execute(_SIZES_SQL.format(where=where), params)
        for instance_id, _tenant, flavor, vcpus, memory_mb, disk_gb, running, billable, stopped in cursor.fetchall():
            result[instance_id].sizes[(flavor, vcpus, memory_mb, disk_gb)] = [int(running), int(billable), int(stopped)]
    return result


def stored_usage_in_python(*, start: datetime, end: datetime, tenant_ids=None, instance_ids=None) -> dict:
    """The same sums made here, row by row: the plain reading of `stored_usage`, which the
    tests hold the SQL to."""
    records = UsageRecord.objects.filter(hour__gte=start, hour__lt=end)
    if tenant_ids is not None:
        records = records.filter(tenant_id__in=list(tenant_ids))
    if instance_ids is not None:
        records = records.filter(instance_id__in=list(instance_ids))
    result: dict = {}
    segment_lists = defaultdict(list)
    for row in records.values("instance_id", "tenant_id", "segments", "tx_bytes").iterator(chunk_size=5000):
        month = result.setdefault(row["instance_id"], InstanceMonth(row["tenant_id"]))
        month.tx_bytes += row["tx_bytes"]
        segment_lists[row["instance_id"]].append(row["segments"])
    for instance_id, month in result.items():
        month.sizes = dict(sum_segments(segment_lists[instance_id]))
    return result


def sum_segments(segment_lists) -> dict[tuple, list[int]]:
    """Seconds per size over many hours' segments: size -> [running, billable, stopped]."""
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for segments in segment_lists:
        for seg in segments:
            key = (seg["flavor"], seg["vcpus"], seg["memory_mb"], seg["disk_gb"])
            slot = totals[key]
            slot[0] += seg["running"]
            slot[1] += seg["billable"]
            slot[2] += seg["stopped"]
    return totals
