"""Item 5: metering and billing, 10,000 instances of 10,000 tenants.

Runs billing's own functions in this process, as its Celery tasks run them in a worker:
  - ingest: `billing.metering.ingest` of one sample per instance per moment, host by host
    (counters made up here: the test driver reports none). Baseline: a plain bulk_create of
    as many MeterSample rows.
  - hourly aggregation: `billing.usage.aggregate` of one hour holding those samples.
    Baseline: one SQL query summing the same hour's samples per instance.
  - the month's hours aggregated in one call (what the hourly task does an hour at a time), so
    that they are stored and final when the run comes, as in production.
  - monthly invoice run: `billing.invoicing.run_month` (aggregates the hours not yet final,
    sums the month in SQL, then writes and issues one invoice per tenant). Target under 60 s
    for 10,000 tenants. Baseline: one single-row query per tenant in a loop, the floor of
    any per-tenant loop.

Each instance ran for the last DAYS day(s) of the month billed, one running stretch in
compute's state log; the note on the invoice figure says how the month's hourly rows scale.
When billing's functions are missing (billing is being written), the area is skipped.
"""

from __future__ import annotations

import inspect
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from bench import seed
from bench.environment import BenchEnvironment
from bench.report import Figure, skipped

AREA = "billing"
FULL = {"tenants": 10_000, "hosts": 100, "moments": 3, "days": 1}
QUICK = {"tenants": 1_000, "hosts": 10, "moments": 2, "days": 1}
INVOICE_TARGET_S = 60.0
NEEDED = {
    "billing.metering": ("ingest", {"host", "taken_at", "stats"}),
    "billing.usage": ("aggregate", {"start", "end", "minimum_seconds"}),
    "billing.invoicing": ("run_month", {"period"}),
}


def unavailable() -> str | None:
    """Why billing cannot be benchmarked yet, or None when its functions are there."""
    import importlib

    for module_name, (function, params) in NEEDED.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a module half-written by its author fails in any way
            return f"skipped: billing not available ({module_name}: {type(exc).__name__}: {exc})"
        target = getattr(module, function, None)
        if target is None or not params <= set(inspect.signature(target).parameters):
            return f"skipped: billing not available ({module_name}.{function}({', '.join(sorted(params))}) missing)"
    try:
        from compute.models import InstanceStateLog  # noqa: F401
    except ImportError:
        return "skipped: billing not available (compute.models.InstanceStateLog missing)"
    return None


def month_of(today: date) -> tuple[date, datetime, datetime]:
    """The last whole month before today: (period, start, end)."""
    first = today.replace(day=1)
    period = (first - timedelta(days=1)).replace(day=1)
    start = datetime(period.year, period.month, 1, tzinfo=UTC)
    end = datetime(first.year, first.month, 1, tzinfo=UTC)
    return period, start, end


def seed_month(count: int, host_count: int, began: datetime) -> list:
    """`count` tenants with one running instance each, spread over `host_count` hosts."""
    from billing.models import FlavorPrice
    from compute.models import Host, Instance, InstanceState, InstanceStateLog
    from compute.services import mac_for
    from compute.sizing import Size
    from tenants.models import Tenant

    flavor = seed.flavor(name="bench.small", memory_mb=1024, disk_gb=10)
    FlavorPrice.objects.create(flavor=flavor, hourly=Decimal("0.01"), monthly_cap=Decimal("5.00"))
    image = seed.image()
    hosts = Host.objects.bulk_create(
        Host(
            name=f"bill-{n}",
            uri="test:///default",
            queue=f"host.bill-{n}",
            vcpus_total=10_000,
            memory_mb_total=10_000_000,
            disk_gb_total=1_000_000,
            domain_type=Host.DomainType.TEST,
        )
        for n in range(host_count)
    )
    tenants = Tenant.objects.bulk_create(
        Tenant(name=f"Tenant {n}", slug=f"bench-tenant-{n}", billing_email="") for n in range(count)
    )
    instances = []
    for n, tenant in enumerate(tenants):
        pk = uuid.uuid4()
        instances.append(
            Instance(
                id=pk,
                tenant=tenant,
                name=f"vm-{n}",
                image=image,
                flavor=flavor,
                **Size.of_flavor(flavor).as_fields(),
                host=hosts[n % host_count],
                state=InstanceState.RUNNING,
                power_state="running",
                ip_address=f"10.{n // 65536}.{n // 256 % 256}.{n % 256}",
                mac_address=mac_for(pk),
                created_at=began,
                launched_at=began,
            )
        )
    Instance.objects.bulk_create(instances, batch_size=2000)
    InstanceStateLog.objects.bulk_create(
        (
            InstanceStateLog(
                instance=i, at=began, state=InstanceState.RUNNING, flavor=flavor, vcpus=1, memory_mb=1024, disk_gb=10
            )
            for i in instances
        ),
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return instances


def _stats(instances, moment: int):
    from compute.drivers.base import DomainStats

    return [
        DomainStats(
            uuid=str(i.pk),
            power="running",
            cpu_time_ns=moment * 10**9,
            rx_bytes=moment * 10**6,
            tx_bytes=moment * 2 * 10**6,
            disk_allocation_bytes=10**9,
        )
        for i in instances
    ]


def measure_ingest(instances, hour: datetime, moments: int) -> tuple[float, float, int]:
    """(ingest seconds, plain bulk_create seconds, samples) for `moments` samples per instance."""
    from billing import metering
    from billing.models import MeterSample

    by_host: dict = {}
    for instance in instances:
        by_host.setdefault(instance.host, []).append(instance)
    step = timedelta(minutes=60 // moments)
    began = time.perf_counter()
    for n in range(moments):
        for host, on_host in by_host.items():
            metering.ingest(host=host, taken_at=hour + n * step, stats=_stats(on_host, n + 1))
    ingest_s = time.perf_counter() - began
    samples = MeterSample.objects.count()
    # The floor: the same number of rows, inserted as plainly as Django can, then removed.
    baseline_at = hour - timedelta(days=40)
    rows = [
        MeterSample(
            instance=i,
            taken_at=baseline_at + n * step,
            cpu_time_ns=1,
            rx_bytes=1,
            tx_bytes=1,
            disk_bytes=1,
            cpu_ns_delta=1,
            rx_delta=1,
            tx_delta=1,
        )
        for n in range(moments)
        for i in instances
    ]
    began = time.perf_counter()
    MeterSample.objects.bulk_create(rows, batch_size=2000)
    plain_s = time.perf_counter() - began
    MeterSample.objects.filter(taken_at__lt=hour - timedelta(days=30)).delete()
    return ingest_s, plain_s, samples


def measure_aggregation(hour: datetime) -> tuple[float, float, int]:
    """(aggregate seconds, grouped-SQL seconds, usage records) for one hour."""
    from billing import prices, usage

    minimum = prices.price_list().minimum_seconds
    began = time.perf_counter()
    records = usage.aggregate(start=hour, end=hour + timedelta(hours=1), minimum_seconds=minimum)
    aggregate_s = time.perf_counter() - began
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT instance_id, sum(rx_delta), sum(tx_delta), sum(cpu_ns_delta) FROM billing_metersample"
            " WHERE taken_at >= %s AND taken_at < %s GROUP BY instance_id",
            [hour, hour + timedelta(hours=1)],
        )
        cursor.fetchall()
    return aggregate_s, time.perf_counter() - began, records


def aggregate_month(start: datetime, end: datetime) -> tuple[float, int]:
    """(seconds, records) of aggregating the whole month in one call: the work the hourly
    task spreads over the month, done before the run as it would have been."""
    from billing import prices, usage

    began = time.perf_counter()
    records = usage.aggregate(start=start, end=end, minimum_seconds=prices.price_list().minimum_seconds)
    return time.perf_counter() - began, records


def measure_invoices(period: date, tenants: int) -> tuple[float, float, dict]:
    """(run_month seconds, per-tenant query loop seconds, run_month's report)."""
    from billing import invoicing
    from tenants.models import Tenant

    began = time.perf_counter()
    report = invoicing.run_month(period=period)
    run_s = time.perf_counter() - began
    ids = list(Tenant.objects.values_list("pk", flat=True)[:tenants])
    began = time.perf_counter()
    for pk in ids:
        Tenant.objects.filter(pk=pk).values_list("status", flat=True).first()
    return run_s, time.perf_counter() - began, report


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    """Ingest rate, hourly aggregation and the monthly invoice run (see the module docstring);
    a skipped row, with the reason, while billing's functions are missing or changed."""
    if reason := unavailable():
        return [skipped(AREA, reason)]
    from billing.models import Invoice, UsageRecord

    sizes = QUICK if quick else FULL
    env.reset_data()
    period, start, end = month_of(timezone.now().date())
    began = end - timedelta(days=sizes["days"])
    instances = seed_month(sizes["tenants"], sizes["hosts"], began)
    hour = end - timedelta(hours=2)
    count = len(instances)

    ingest_s, plain_s, samples = measure_ingest(instances, hour, sizes["moments"])
    aggregate_s, sql_s, hour_records = measure_aggregation(hour)
    month_s, month_aggregated = aggregate_month(start, end)
    run_s, loop_s, report = measure_invoices(period, sizes["tenants"])
    month_records = UsageRecord.objects.filter(hour__gte=start, hour__lt=end).count()
    issued = Invoice.objects.filter(period=period, state=Invoice.State.ISSUED).count()
    if issued != sizes["tenants"]:
        raise RuntimeError(f"run_month issued {issued} invoices for {sizes['tenants']} tenants: {report}")
    return [
        Figure(
            AREA,
            f"metering.ingest: {samples:,} samples of {count:,} instances on {sizes['hosts']} hosts",
            samples / ingest_s,
            "samples/s",
            baseline=samples / plain_s,
            baseline_name="plain bulk_create",
        ),
        Figure(
            AREA,
            f"usage.aggregate of one hour, {count:,} instances ({hour_records:,} records)",
            aggregate_s,
            "s",
            baseline=sql_s,
            baseline_name="one grouped SQL query",
        ),
        Figure(
            AREA,
            f"usage.aggregate of the whole month at once, {count:,} instances ({month_aggregated:,} records)",
            month_s,
            "s",
            note="the hourly task does this an hour at a time during the month; the run below reads its rows",
        ),
        Figure(
            AREA,
            f"invoicing.run_month: {issued:,} tenants, {month_records:,} hourly records",
            run_s,
            "s",
            baseline=loop_s,
            baseline_name="a 1-row query per tenant",
            target=f"< {INVOICE_TARGET_S:.0f} s" if sizes["tenants"] >= FULL["tenants"] else "",
            passed=run_s < INVOICE_TARGET_S if sizes["tenants"] >= FULL["tenants"] else None,
            note=f"each instance ran the last {sizes['days']} day(s) of the month, its hours already aggregated; "
            f"a whole month of running makes ~{30 // sizes['days']}x as many hourly records for run_month to sum",
            detail={"report": {k: str(v) for k, v in report.items()}},
        ),
    ]
