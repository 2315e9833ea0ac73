"""Reads of billing shared by the API and the UI: month to date, per instance and tenant."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from billing import invoicing, metering, periods, rating, usage
from billing import prices as price_lookup
from billing.models import MeterSample
from billing.money import GIB, ZERO
from compute.models import Flavor, Instance
from tenants.models import Tenant


def month_to_date(*, tenant: Tenant, now: datetime | None = None, instance_ids=None) -> dict:
    """Cost so far this month per instance (computed live from the state log and samples,
    the same way the invoice will), with traffic used against the allowance."""
    now = now or timezone.now()
    start = metering.month_start(now)
    prices = price_lookup.price_list()
    hours = usage.compute_usage(
        start=start, end=now, minimum_seconds=prices.minimum_seconds, tenant=tenant, instance_ids=instance_ids
    )
    segments, traffic = defaultdict(list), defaultdict(int)
    for hour in hours:
        segments[hour.instance_id].append(hour.segments_json())
        traffic[hour.instance_id] += hour.tx_bytes
    instances = Instance.objects.in_bulk(list(segments))
    flavors = {str(pk): f for pk, f in Flavor.objects.in_bulk().items()}
    _start, end = periods.month_bounds(start.date())
    period_seconds = int((end - start).total_seconds())
    rows, total = [], ZERO
    for instance_id in sorted(segments, key=str):
        instance = instances[instance_id]
        lines = rating.rate_instance(
            instance=instance,
            sizes=usage.sum_segments(segments[instance_id]),
            tx_bytes=traffic[instance_id],
            period_seconds=period_seconds,
            prices=prices,
            flavors=flavors,
        )
        cost = rating.total(lines)
        total += cost
        allowance = instance.traffic_gb * GIB
        rows.append(
            {
                "instance": instance,
                "cost": cost,
                "running_seconds": sum(seg["running"] for hour in segments[instance_id] for seg in hour),
                "traffic": {
                    "sent_bytes": traffic[instance_id],
                    "allowance_bytes": allowance,
                    "percent": (Decimal(100) * traffic[instance_id] / allowance).quantize(Decimal("0.1"))
                    if allowance
                    else Decimal(0),
                    "policy": price_lookup.over_policy(instance),
                    "throttled": instance.throttled,
                },
                "lines": lines,
            }
        )
    return {"period": start.date(), "currency": prices.currency, "instances": rows, "total": total}


def throttle_reason(instance: Instance) -> str:
    if not instance.throttled:
        return ""
    return (
        f"Throttled to {price_lookup.price_list().throttle_mbit} Mbit/s: this month's {instance.traffic_gb} GiB "
        "traffic allowance is used up. Full speed returns when the next month begins."
    )


def revenue_last_month() -> dict:
    """Invoiced and unpaid totals of the last invoiced month, for operators."""
    today = timezone.now().date()
    return invoicing.revenue(period=periods.previous_month(today))


def instance_usage_series(instance: Instance, *, hours: int = 48) -> dict:
    """Hourly CPU seconds and bytes sent and received, for the instance page's charts."""
    now = timezone.now()
    start = usage.floor_hour(now) - (hours - 1) * usage.HOUR
    computed = usage.compute_usage(start=start, end=now, minimum_seconds=0, instance_ids=[instance.pk])
    return {
        "hours": [u.hour.isoformat() for u in computed],
        "cpu_seconds": [round(u.cpu_ns / 1e9, 3) for u in computed],
        "rx_bytes": [u.rx_bytes for u in computed],
        "tx_bytes": [u.tx_bytes for u in computed],
    }


SAMPLE_STEP_SECONDS = 300


def instance_sample_series(instance: Instance, *, hours: int = 24, now: datetime | None = None) -> dict:
    """5-minute points of the last `hours` from the meter samples: CPU % of the instance's
    vCPUs (CPU time over the time the samples cover), bytes received and sent in each 5
    minutes, and the disk space used at the last sample of each."""
    now = now or timezone.now()
    rows = (
        MeterSample.objects.filter(instance=instance, taken_at__gt=now - timedelta(hours=hours), taken_at__lte=now)
        .order_by("taken_at")
        .values_list("taken_at", "cpu_ns_delta", "rx_delta", "tx_delta", "disk_bytes")
    )
    buckets: dict[datetime, dict] = {}
    previous = None
    for taken_at, cpu_ns, rx, tx, disk in rows:
        # The time this sample's growth covers: since the previous one (the metering period
        # for the first, and at most 10 minutes across a gap).
        covered = (taken_at - previous).total_seconds() if previous else settings.METERING_SECONDS
        previous = taken_at
        start = datetime.fromtimestamp(
            taken_at.timestamp() // SAMPLE_STEP_SECONDS * SAMPLE_STEP_SECONDS, tz=taken_at.tzinfo
        )
        bucket = buckets.setdefault(start, {"cpu_ns": 0, "seconds": 0.0, "rx": 0, "tx": 0, "disk": 0})
        bucket["cpu_ns"] += cpu_ns
        bucket["seconds"] += min(max(covered, 1.0), 600.0)
        bucket["rx"] += rx
        bucket["tx"] += tx
        bucket["disk"] = disk
    vcpus = max(instance.vcpus, 1)
    series: dict[str, list[dict]] = {"cpu": [], "rx_bytes": [], "tx_bytes": [], "disk_bytes": []}
    for start, b in sorted(buckets.items()):
        t = start.isoformat()
        series["cpu"].append({"t": t, "v": round(min(100.0, 100 * b["cpu_ns"] / 1e9 / (b["seconds"] * vcpus)), 1)})
        series["rx_bytes"].append({"t": t, "v": b["rx"]})
        series["tx_bytes"].append({"t": t, "v": b["tx"]})
        series["disk_bytes"].append({"t": t, "v": b["disk"]})
    return series
