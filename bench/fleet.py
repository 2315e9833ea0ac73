"""Issue 17, item 5: a fleet of 10,000 hosts and 1,000,000 instances, as rows.

The control plane's paths never talk to a hypervisor for these figures (placement, the
instance list, metering's ingest, aggregation and invoicing read and write rows only), so the
fleet is rows seeded with PostgreSQL COPY: hosts on libvirt's test driver (`test:///default`),
tenants, instances with their state log and build actions. Counters for metering are made up
here, as the billing area does: the test driver reports none.

Two phases, in the run's own database:
  A. the fleet (full: 10,000 hosts, 1,000,000 instances, one tenant with 100,000 of them and
     one with 10,000, the rest spread over 100,000 tenants; --quick: a tenth of each):
       - database size after the seed (pg_database_size), and per table;
       - `compute.scheduler.place` at every host, each call in a rolled-back transaction,
         interleaved with its floors `SELECT 1` and a one-row indexed SELECT of a host;
       - GET /api/v1/instances under gunicorn (as the api area): the cursor walk and the
         numbered first page of the 100,000-instance tenant against the same of the
         10,000-instance one, interleaved rounds, beside GET /healthz;
       - `billing.metering.ingest`, host by host, of the fleet's second minute (the first
         minute is COPYed in: the floor, and what gives ingest a previous sample to subtract),
         for a bounded time; the rate against the 16,667 samples/s one sample a minute of
         1,000,000 instances needs; then a few hosts under cProfile, to say what limits it.
  B. billing (full: 100,000 tenants with one instance each; --quick: 10,000): the hour's
     samples (one a minute) and the month's other hourly records COPYed in, as the metering
     and the hourly task would have left them; then `billing.usage.aggregate` of one hour
     (floor: one grouped SQL query over the same samples) and `billing.invoicing.run_month`
     (floor: one grouped SQL query summing the month's records per tenant), goal under 60 s.

BENCH_FLEET_SIZE=hosts,instances,tenants overrides the size (for one point between the two).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import random
import resource
import statistics
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import AutoField, BigAutoField
from django.utils import timezone

from bench import processes, seed
from bench.billing import month_of
from bench.environment import BenchEnvironment
from bench.load import Rounds, drive
from bench.report import Figure, percentile

AREA = "fleet"
FULL = {"hosts": 10_000, "instances": 1_000_000, "tenants": 100_000}
QUICK = {"hosts": 1_000, "instances": 100_000, "tenants": 10_000}
SCHEDULER_GOAL_MS = 5.0
INGEST_GOAL = 1_000_000 / 60  # one sample a minute of 1,000,000 instances
INVOICE_GOAL_S = 60.0
PLACE_REPEATS = 300
PLACE_SECONDS = 20.0
LIST_CLIENTS = 4
COPY_CHUNK = 20_000
ACTIONS_PER_INSTANCE = 8  # the request and compute.transitions.PROVISION_STEPS' seven steps


# -- COPY ---------------------------------------------------------------------------------------


def _text(value) -> str:
    """A value in COPY's text format."""
    if value is None:
        return r"\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict | list):
        text = json.dumps(value)
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_rows(model, varying: list[str], rows, **fixed) -> int:
    """COPY rows into `model`'s table: `varying` names the fields each row tuple gives, in
    order; `fixed` gives one value for every row; other fields take their model default (an
    auto primary key its sequence). Returns the number of rows written."""
    columns, template = [], []
    for field in model._meta.concrete_fields:
        names = (field.name, field.attname)
        given = next((varying.index(n) for n in names if n in varying), None)
        if given is not None:
            template.append(f"{{{given}}}")
        else:
            if any(n in fixed for n in names):
                value = fixed.get(field.name, fixed.get(field.attname))
                value = getattr(value, "pk", value)
            elif isinstance(field, AutoField | BigAutoField):
                continue
            else:
                value = field.get_default()
                if value is None and not field.null:
                    raise ValueError(f"{model.__name__}.{field.name} needs a value")
            template.append(_text(value).replace("{", "{{").replace("}", "}}"))
        columns.append(connection.ops.quote_name(field.column))
    line = "\t".join(template) + "\n"
    table = connection.ops.quote_name(model._meta.db_table)
    written = 0
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        chunk = []
        for row in rows:
            chunk.append(line.format(*map(_text, row)))
            if len(chunk) >= COPY_CHUNK:
                copy.write("".join(chunk))
                written += len(chunk)
                chunk = []
        if chunk:
            copy.write("".join(chunk))
            written += len(chunk)
    return written


def _sql(query: str, params=None) -> list:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def _mac(n: int) -> str:
    return "02:fe:" + ":".join(f"{b:02x}" for b in n.to_bytes(4, "big"))


def _ip(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


# -- sizes --------------------------------------------------------------------------------------


def sizes_for(quick: bool) -> dict:
    base = dict(QUICK if quick else FULL)
    if raw := os.environ.get("BENCH_FLEET_SIZE"):
        hosts, instances, tenants = (int(x) for x in raw.split(","))
        base = {"hosts": hosts, "instances": instances, "tenants": tenants}
    # The listed tenants: a tenth of the fleet, and a tenth of that.
    base["big"] = base["instances"] // 10
    base["small"] = base["big"] // 10
    base["ingest_seconds"] = 20.0 if quick else 60.0
    base["list_requests"] = 800 if quick else 2_000
    base["list_seconds"] = 5.0 if quick else 10.0
    base["rounds"] = 1 if quick else 3
    return base


# -- phase A: the fleet -------------------------------------------------------------------------


def seed_fleet(sizes: dict, now: datetime) -> dict:
    """Hosts, tenants, instances (state log and build actions each) as rows; returns what the
    measurements need and the seconds each table took."""
    from compute.models import Host, Instance, InstanceAction, InstanceState, InstanceStateLog
    from compute.sizing import Size
    from compute.transitions import PROVISION_STEPS
    from tenants.models import Tenant

    timings = {}
    image = seed.image()
    flavor = seed.flavor(name="bench.small", memory_mb=1024, disk_gb=10)
    big, small = seed.account("big@example.com"), seed.account("small@example.com")
    rng = random.Random(17)

    began = time.perf_counter()
    host_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(sizes["hosts"])]

    # The scheduler area's mix: 16 to 64 CPUs, 4 GiB per CPU, filled 0 to 90%, 5% down.
    def host_rows():
        for n, pk in enumerate(host_ids):
            cpus = rng.choice([16, 32, 64])
            memory = cpus * 4096
            fill = rng.random() * 0.9
            status = Host.Status.DOWN if rng.random() < 0.05 else Host.Status.UP
            yield (
                pk,
                f"fleet-{n:05d}",
                f"host.fleet-{n:05d}",
                status,
                cpus,
                memory,
                int(cpus * 4 * fill),
                int(memory * fill),
                int(2000 * fill),
            )

    copy_rows(
        Host,
        ["id", "name", "queue", "status", "vcpus_total", "memory_mb_total"]
        + ["vcpus_used", "memory_mb_used", "disk_gb_used"],
        host_rows(),
        uri="test:///default",
        disk_gb_total=2000,
        domain_type=Host.DomainType.TEST,
        created_at=now,
    )
    timings["hosts"] = time.perf_counter() - began

    began = time.perf_counter()
    tenant_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(sizes["tenants"])]
    copy_rows(
        Tenant,
        ["id", "name", "slug"],
        ((pk, f"Tenant {n}", f"fleet-tenant-{n}") for n, pk in enumerate(tenant_ids)),
        billing_email="",
        created_at=now,
    )
    timings["tenants"] = time.perf_counter() - began

    # Instance n: the first `big` are the big tenant's, the next `small` the small one's, the
    # rest spread over the other tenants; 100 or so per host, on every host in turn.
    count, first_other = sizes["instances"], sizes["big"] + sizes["small"]
    instance_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]

    def tenant_of(n: int):
        if n < sizes["big"]:
            return big.tenant.pk
        if n < first_other:
            return small.tenant.pk
        return tenant_ids[(n - first_other) % len(tenant_ids)]

    def created(n: int) -> datetime:
        return now - timedelta(seconds=count - n)

    began = time.perf_counter()
    copy_rows(
        Instance,
        ["id", "tenant", "name", "host", "ip_address", "mac_address", "created_at", "launched_at"],
        (
            (pk, tenant_of(n), f"vm-{n:07d}", host_ids[n % len(host_ids)], _ip(n), _mac(n), created(n), created(n))
            for n, pk in enumerate(instance_ids)
        ),
        image=image,
        flavor=flavor,
        **Size.of_flavor(flavor).as_fields(),
        state=InstanceState.RUNNING,
        power_state="running",
        created_by=None,
    )
    timings["instances"] = time.perf_counter() - began

    began = time.perf_counter()
    copy_rows(
        InstanceStateLog,
        ["instance", "at"],
        ((pk, created(n)) for n, pk in enumerate(instance_ids)),
        state=InstanceState.RUNNING,
        flavor=flavor,
        vcpus=flavor.vcpus,
        memory_mb=flavor.memory_mb,
        disk_gb=flavor.disk_gb,
    )
    timings["state log"] = time.perf_counter() - began

    # What a finished build leaves: the request and one row per step (the list reads them).
    began = time.perf_counter()

    def actions():
        done, requested = InstanceAction.Status.DONE, InstanceAction.Status.REQUESTED
        for n, pk in enumerate(instance_ids):
            at = created(n)
            yield (pk, "", requested, at, None)
            for step in PROVISION_STEPS:
                yield (pk, step, done, at, 5)

    copy_rows(InstanceAction, ["instance", "step", "status", "started_at", "duration_ms"], actions(), action="create")
    timings["actions"] = time.perf_counter() - began

    began = time.perf_counter()
    _sql("VACUUM ANALYZE")  # what autovacuum does within minutes of such a load
    timings["vacuum analyze"] = time.perf_counter() - began
    return {
        "image": image,
        "flavor": flavor,
        "big": big,
        "small": small,
        "host_ids": host_ids,
        "instance_ids": instance_ids,
        "timings": timings,
    }


def database_size() -> tuple[int, dict]:
    """(pg_database_size, {table: total bytes with indexes}) of the largest tables."""
    (size,) = _sql("SELECT pg_database_size(current_database())")[0]
    tables = _sql(
        "SELECT relname, pg_total_relation_size(c.oid), reltuples::bigint FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 2 DESC LIMIT 8"
    )
    return size, {name: {"bytes": total, "rows": rows} for name, total, rows in tables}


def _rolled_back(call) -> float:
    with transaction.atomic():
        began = time.perf_counter()
        call()
        elapsed = time.perf_counter() - began
        transaction.set_rollback(True)
    return elapsed


def measure_place(fleet: dict, sizes: dict) -> list[Figure]:
    from compute import scheduler
    from compute.sizing import Size

    image = fleet["image"]
    size = Size(vcpus=1, memory_mb=1024, disk_gb=10, bandwidth_mbit=100, traffic_gb=100, sla_percent=Decimal("99.9"))
    names = [f"fleet-{n:05d}" for n in range(sizes["hosts"])]

    def select_one():
        _sql("SELECT 1")

    def indexed():
        _sql("SELECT id, vcpus_used FROM compute_host WHERE name = %s", [random.choice(names)])

    calls = {"place": lambda: scheduler.place(size, image), "select1": select_one, "indexed": indexed}
    for _ in range(20):
        for call in calls.values():
            _rolled_back(call)
    times = {name: [] for name in calls}
    deadline = time.monotonic() + PLACE_SECONDS
    while len(times["place"]) < PLACE_REPEATS and time.monotonic() < deadline:
        for name, call in calls.items():
            times[name].append(_rolled_back(call) * 1000)
    (plan,) = _sql(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + _candidates_sql(scheduler, size, image),
    )[0]
    p50 = {name: percentile(t, 50) for name, t in times.items()}
    p95 = {name: percentile(t, 95) for name, t in times.items()}
    hosts = sizes["hosts"]
    return [
        Figure(
            AREA,
            f"place() at {hosts:,} hosts, p50",
            p50["place"],
            "ms",
            baseline=p50["select1"],
            baseline_name="SELECT 1",
            target=f"< {SCHEDULER_GOAL_MS:.0f} ms",
            passed=p50["place"] < SCHEDULER_GOAL_MS,
            detail={
                "samples": len(times["place"]),
                "p95_ms": p95,
                "p50_ms": p50,
                "candidate_query_ms": plan[0]["Execution Time"],
                "candidate_plan": _plan_summary(plan[0]["Plan"]),
            },
        ),
        Figure(
            AREA,
            f"place() at {hosts:,} hosts, p95",
            p95["place"],
            "ms",
            baseline=p95["indexed"],
            baseline_name="1-row indexed SELECT of a host",
        ),
    ]


def _candidates_sql(scheduler, size, image) -> str:
    query = scheduler.candidate_hosts(size, image)[: scheduler.CANDIDATES_PER_ROUND]
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        return cursor.mogrify(sql, params)


def _plan_summary(node: dict, depth: int = 0) -> list[str]:
    line = f"{'  ' * depth}{node['Node Type']}" + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
    line += f" rows={node.get('Actual Rows')} time={node.get('Actual Total Time')} ms"
    out = [line]
    for child in node.get("Plans", []):
        out += _plan_summary(child, depth + 1)
    return out


def measure_list(env: BenchEnvironment, fleet: dict, sizes: dict) -> list[Figure]:
    """The cursor walk and the numbered first page of the big tenant against the small one."""
    big, small = fleet["big"], fleet["small"]
    ways = {
        ("cursor", "big"): (big, lambda: "/api/v1/instances?cursor=", True),
        ("cursor", "small"): (small, lambda: "/api/v1/instances?cursor=", True),
        ("page1", "big"): (big, lambda: "/api/v1/instances?page=1", False),
        ("page1", "small"): (small, lambda: "/api/v1/instances?page=1", False),
    }
    web = processes.start_web(env)
    try:
        for account, path in [(big, ways[("page1", "big")][1]), (small, lambda: "/healthz")]:
            drive(web.port, path, headers=account.headers, clients=4, max_requests=40, max_seconds=30)
        results = {key: [] for key in ways}
        health = []
        for _round in range(sizes["rounds"]):
            health.append(
                drive(
                    web.port,
                    lambda: "/healthz",
                    headers={},
                    clients=LIST_CLIENTS,
                    max_requests=sizes["list_requests"],
                    max_seconds=sizes["list_seconds"] / 2,
                )
            )
            for key, (account, path, follow) in ways.items():
                results[key].append(
                    drive(
                        web.port,
                        path,
                        headers=account.headers,
                        clients=LIST_CLIENTS,
                        max_requests=sizes["list_requests"],
                        max_seconds=sizes["list_seconds"],
                        follow_next=follow,
                    )
                )
    finally:
        processes.stop([web])
    healthz = Rounds.of(health)
    merged = {key: Rounds.of(r) for key, r in results.items()}
    figures = []
    for way, how in (("cursor", "?cursor= then next links"), ("page1", "?page=1")):
        b, s = merged[(way, "big")], merged[(way, "small")]
        detail = {
            "round_rates": {f"{k[0]}/{k[1]}": r.round_rates for k, r in merged.items() if k[0] == way},
            "p50_ms": {"big": b.p(50) * 1000, "small": s.p(50) * 1000, "healthz": healthz.p(50) * 1000},
            "p95_ms": {"big": b.p(95) * 1000, "small": s.p(95) * 1000, "healthz": healthz.p(95) * 1000},
            "errors": {"big": b.errors, "small": s.errors},
        }
        ratio = b.rate / s.rate if s.rate else 0
        figures += [
            Figure(
                AREA,
                f"GET /api/v1/instances{how}, tenant of {sizes['small']:,}, {LIST_CLIENTS} clients",
                s.rate,
                "req/s",
                baseline=healthz.rate,
                baseline_name="GET /healthz",
                detail=detail,
            ),
            Figure(
                AREA,
                f"GET /api/v1/instances{how}, tenant of {sizes['big']:,}, {LIST_CLIENTS} clients",
                b.rate,
                "req/s",
                baseline=s.rate,
                baseline_name=f"same at {sizes['small']:,}",
                target="ratio >= 0.9 (same rate)",
                passed=ratio >= 0.9 and not b.errors,
                note="" if not b.errors else f"{b.errors} failed requests",
                detail=detail,
            ),
        ]
    return figures


def measure_ingest(fleet: dict, sizes: dict, now: datetime) -> list[Figure]:
    """COPY the first minute (the floor), then ingest the second one host by host."""
    from billing import metering
    from billing.models import MeterSample
    from compute.drivers.base import DomainStats
    from compute.models import Host

    first = now.replace(second=0, microsecond=0) - timedelta(minutes=10)
    second = first + timedelta(minutes=1)
    ids = fleet["instance_ids"]
    began = time.perf_counter()
    copied = copy_rows(
        MeterSample,
        ["instance"],
        ((pk,) for pk in ids),
        taken_at=first,
        cpu_time_ns=60 * 10**9,
        rx_bytes=10**6,
        tx_bytes=2 * 10**6,
        disk_bytes=10**9,
        cpu_ns_delta=60 * 10**9,
        rx_delta=10**6,
        tx_delta=2 * 10**6,
    )
    copy_s = time.perf_counter() - began
    _sql("ANALYZE billing_metersample")
    on_host: dict = {}
    for n, pk in enumerate(ids):
        on_host.setdefault(fleet["host_ids"][n % len(fleet["host_ids"])], []).append(pk)

    def stats_of(pks):
        return [
            DomainStats(
                uuid=str(pk),
                power="running",
                cpu_time_ns=120 * 10**9,
                rx_bytes=2 * 10**6,
                tx_bytes=4 * 10**6,
                disk_allocation_bytes=10**9,
            )
            for pk in pks
        ]

    hosts = {h.pk: h for h in Host.objects.all()}
    order = list(on_host)
    done, stored, calls = 0, 0, []
    began = time.perf_counter()
    deadline = time.monotonic() + sizes["ingest_seconds"]
    while done < len(order) - 20 and time.monotonic() < deadline:
        host_id = order[done]
        stats = stats_of(on_host[host_id])  # made before the clock: collect's share is libvirt's
        call_began = time.perf_counter()
        stored += metering.ingest(host=hosts[host_id], taken_at=second, stats=stats)
        calls.append(time.perf_counter() - call_began)
        done += 1
    wall = time.perf_counter() - began
    ingest_rate = stored / sum(calls)

    # What limits it: a few more hosts under cProfile, with PostgreSQL's share.
    profiler = cProfile.Profile()
    profiled = order[done : done + 20]
    prepared = [(hosts[h], stats_of(on_host[h])) for h in profiled]
    profiler.enable()
    for host, stats in prepared:
        metering.ingest(host=host, taken_at=second, stats=stats)
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
    stats.print_stats(12)
    total = sum(v[2] for v in stats.stats.values())
    in_db = sum(v[2] for k, v in stats.stats.items() if k[2] in ("wait", "execute", "_wait") or "psycopg" in k[0])
    per_call = statistics.median(calls) * 1000
    profile_text = stream.getvalue()
    sketch_rate, sketch_stored = ingest_in_sql(on_host, order[done + 20 :], second, sizes["ingest_seconds"] / 2)
    print(profile_text[profile_text.find("ncalls") - 2 :] if "ncalls" in profile_text else profile_text)
    per_host = len(ids) / len(order)
    return [
        Figure(
            AREA,
            f"metering.ingest, host by host (~{per_host:.0f} instances each), {stored:,} samples in {wall:.0f} s",
            ingest_rate,
            "samples/s",
            baseline=copied / copy_s,
            baseline_name="COPY of the first minute",
            target=f">= {INGEST_GOAL:,.0f} samples/s (1M instances, 1/min)",
            passed=ingest_rate >= INGEST_GOAL,
            note=f"one process; {per_call:.1f} ms per host call (median); "
            f"PostgreSQL wait {in_db / total:.0%} of a profiled call's time",
            detail={
                "hosts_ingested": done,
                "calls_median_ms": per_call,
                "calls_p95_ms": percentile(calls, 95) * 1000,
                "copy_seconds": copy_s,
                "copied": copied,
                "profile_db_share": in_db / total if total else None,
                "profile_top": profile_text.splitlines()[-20:],
            },
        ),
        Figure(
            AREA,
            f"sketch, not product code: the same minute by COPY to a staging table + one INSERT ... SELECT "
            f"per {SKETCH_HOSTS} hosts ({sketch_stored:,} samples)",
            sketch_rate,
            "samples/s",
            baseline=copied / copy_s,
            baseline_name="COPY of the first minute",
            target=f">= {INGEST_GOAL:,.0f} samples/s",
            passed=sketch_rate >= INGEST_GOAL,
            note="the growth computed in SQL from each instance's previous sample; what a metering path "
            "bypassing the ORM would do",
        ),
    ]


SKETCH_HOSTS = 100
_SKETCH_INSERT = """
INSERT INTO billing_metersample
    (instance_id, taken_at, cpu_time_ns, rx_bytes, tx_bytes, disk_bytes, cpu_ns_delta, rx_delta, tx_delta)
SELECT m.instance_id, %(at)s, m.cpu, m.rx, m.tx, m.disk,
       CASE WHEN p.cpu_time_ns IS NULL OR m.cpu < p.cpu_time_ns THEN m.cpu ELSE m.cpu - p.cpu_time_ns END,
       CASE WHEN p.rx_bytes IS NULL OR m.rx < p.rx_bytes THEN m.rx ELSE m.rx - p.rx_bytes END,
       CASE WHEN p.tx_bytes IS NULL OR m.tx < p.tx_bytes THEN m.tx ELSE m.tx - p.tx_bytes END
FROM meter_in m
JOIN compute_instance i ON i.id = m.instance_id AND i.state <> 'deleted'
LEFT JOIN LATERAL (SELECT s.taken_at FROM billing_metersample s WHERE s.instance_id = m.instance_id
                   ORDER BY s.taken_at DESC LIMIT 1) n ON true
LEFT JOIN LATERAL (SELECT s.cpu_time_ns, s.rx_bytes, s.tx_bytes FROM billing_metersample s
                   WHERE s.instance_id = m.instance_id AND s.taken_at < %(at)s
                   ORDER BY s.taken_at DESC LIMIT 1) p ON true
WHERE n.taken_at IS NULL OR n.taken_at < %(at)s
ON CONFLICT DO NOTHING
"""


def ingest_in_sql(on_host: dict, host_ids: list, taken_at: datetime, seconds: float) -> tuple[float, int]:
    """A sketch of metering without the ORM, for the design note: the counters of SKETCH_HOSTS
    hosts COPYed into a temporary table, then one INSERT ... SELECT that skips what is stored
    already and computes the growth from each instance's previous sample, as `ingest` does."""
    stored, began = 0, time.perf_counter()
    deadline = time.monotonic() + seconds
    for first in range(0, len(host_ids), SKETCH_HOSTS):
        if time.monotonic() > deadline:
            break
        pks = [pk for host in host_ids[first : first + SKETCH_HOSTS] for pk in on_host[host]]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE meter_in (instance_id uuid, cpu bigint, rx bigint, tx bigint, disk bigint)"
                " ON COMMIT DROP"
            )
            with cursor.cursor.copy("COPY meter_in FROM STDIN") as copy:
                copy.write("".join(f"{pk}\t{120 * 10**9}\t{2 * 10**6}\t{4 * 10**6}\t{10**9}\n" for pk in pks))
            cursor.execute(_SKETCH_INSERT, {"at": taken_at})
            stored += cursor.rowcount
    elapsed = time.perf_counter() - began
    return (stored / elapsed if elapsed else 0.0), stored


# -- phase B: billing ---------------------------------------------------------------------------


def seed_billing(count: int, now: datetime) -> dict:
    """`count` tenants with one instance each that ran the last day of last month: the hour
    measured holds its minute samples, the month's other hours their stored records (final,
    as the hourly task leaves them)."""
    from billing.models import AggregatedHour, FlavorPrice, MeterSample, UsageRecord
    from compute.models import Host, Instance, InstanceState, InstanceStateLog
    from compute.sizing import Size
    from tenants.models import Tenant

    period, start, end = month_of(now.date())
    began_at = end - timedelta(days=1)
    hour = end - timedelta(hours=2)
    flavor = seed.flavor(name="bench.small", memory_mb=1024, disk_gb=10)
    FlavorPrice.objects.create(flavor=flavor, hourly=Decimal("0.01"), monthly_cap=Decimal("5.00"))
    image = seed.image()
    rng = random.Random(5)
    timings = {}
    t0 = time.perf_counter()
    host_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(max(1, count // 100))]
    copy_rows(
        Host,
        ["id", "name", "queue"],
        ((pk, f"bill-{n}", f"host.bill-{n}") for n, pk in enumerate(host_ids)),
        uri="test:///default",
        vcpus_total=10_000,
        memory_mb_total=10_000_000,
        disk_gb_total=1_000_000,
        domain_type=Host.DomainType.TEST,
        created_at=began_at,
    )
    tenant_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]
    copy_rows(
        Tenant,
        ["id", "name", "slug"],
        ((pk, f"Tenant {n}", f"bill-tenant-{n}") for n, pk in enumerate(tenant_ids)),
        billing_email="",
        created_at=began_at,
    )
    instance_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]
    copy_rows(
        Instance,
        ["id", "tenant", "name", "host", "ip_address", "mac_address"],
        (
            (pk, tenant_ids[n], f"vm-{n}", host_ids[n % len(host_ids)], _ip(n), _mac(n))
            for n, pk in enumerate(instance_ids)
        ),
        image=image,
        flavor=flavor,
        **Size.of_flavor(flavor).as_fields(),
        state=InstanceState.RUNNING,
        power_state="running",
        created_by=None,
        created_at=began_at,
        launched_at=began_at,
    )
    copy_rows(
        InstanceStateLog,
        ["instance"],
        ((pk,) for pk in instance_ids),
        at=began_at,
        state=InstanceState.RUNNING,
        flavor=flavor,
        vcpus=flavor.vcpus,
        memory_mb=flavor.memory_mb,
        disk_gb=flavor.disk_gb,
    )
    timings["tenants, instances"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    minutes = [hour + timedelta(minutes=m) for m in range(60)]
    copy_rows(
        MeterSample,
        ["instance", "taken_at", "cpu_time_ns", "tx_bytes"],
        ((pk, at, (m + 1) * 10**9, (m + 1) * 10**6) for pk in instance_ids for m, at in enumerate(minutes)),
        rx_bytes=0,
        disk_bytes=10**9,
        cpu_ns_delta=10**9,
        rx_delta=0,
        tx_delta=10**6,
    )
    timings["samples"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    segments = [
        {
            "flavor": str(flavor.pk),
            "vcpus": flavor.vcpus,
            "memory_mb": flavor.memory_mb,
            "disk_gb": flavor.disk_gb,
            "running": 3600,
            "billable": 3600,
            "stopped": 0,
        }
    ]
    other_hours = [began_at + timedelta(hours=h) for h in range(24)]
    other_hours.remove(hour)
    copy_rows(
        UsageRecord,
        ["instance", "tenant", "hour"],
        ((pk, tenant_ids[n], at) for n, pk in enumerate(instance_ids) for at in other_hours),
        running_seconds=3600,
        billable_running_seconds=3600,
        stopped_seconds=0,
        rx_bytes=0,
        tx_bytes=60 * 10**6,
        cpu_seconds=Decimal("60.000"),
        segments=segments,
    )
    timings["usage records"] = time.perf_counter() - t0
    before_start, _ = month_of(period)[1:]
    noted, at = [], before_start
    while at < end:
        noted.append(AggregatedHour(hour=at, aggregated_at=at + timedelta(days=1)))
        at += timedelta(hours=1)
    AggregatedHour.objects.bulk_create(noted)
    t0 = time.perf_counter()
    _sql("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - t0
    return {"period": period, "start": start, "end": end, "hour": hour, "timings": timings}


def measure_billing(env: BenchEnvironment, sizes: dict, now: datetime) -> list[Figure]:
    from billing import invoicing, prices, usage
    from billing.models import Invoice, UsageRecord

    env.reset_data()
    count = sizes["tenants"]
    began = time.perf_counter()
    seeded = seed_billing(count, now)
    print(f"   billing seeded in {time.perf_counter() - began:.0f} s ({seeded['timings']})", flush=True)
    hour, start, end, period = seeded["hour"], seeded["start"], seeded["end"], seeded["period"]
    minimum = prices.price_list().minimum_seconds
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    records = usage.aggregate(start=hour, end=hour + timedelta(hours=1), minimum_seconds=minimum)
    aggregate_s = time.perf_counter() - began
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    _sql(
        "SELECT instance_id, sum(rx_delta), sum(tx_delta), sum(cpu_ns_delta) FROM billing_metersample"
        " WHERE taken_at >= %s AND taken_at < %s GROUP BY instance_id",
        [hour, hour + timedelta(hours=1)],
    )
    grouped_s = time.perf_counter() - began
    print(f"   usage.aggregate of one hour: {aggregate_s:.1f} s", flush=True)

    began = time.perf_counter()
    report = invoicing.run_month(period=period)
    run_s = time.perf_counter() - began
    began = time.perf_counter()
    _sql(
        "SELECT tenant_id, sum(billable_running_seconds), sum(tx_bytes) FROM billing_usagerecord"
        " WHERE hour >= %s AND hour < %s GROUP BY tenant_id",
        [start, end],
    )
    month_sql_s = time.perf_counter() - began
    month_records = UsageRecord.objects.filter(hour__gte=start, hour__lt=end).count()
    issued = Invoice.objects.filter(period=period, state=Invoice.State.ISSUED).count()
    if issued != count:
        raise RuntimeError(f"run_month issued {issued} invoices for {count} tenants: {report}")
    size, tables = database_size()
    return [
        Figure(
            AREA,
            f"usage.aggregate of one hour, {count:,} instances ({records:,} records, 60 samples each)",
            aggregate_s,
            "s",
            baseline=grouped_s,
            baseline_name="one grouped SQL query",
            detail={"peak_rss_mib_before": rss_before / 1024, "peak_rss_mib_after": rss_after / 1024},
            note=f"peak RSS of this process {rss_after / 1024:.0f} MiB after it",
        ),
        Figure(
            AREA,
            f"invoicing.run_month: {issued:,} tenants, {month_records:,} hourly records",
            run_s,
            "s",
            baseline=month_sql_s,
            baseline_name="one grouped SQL sum per tenant",
            target=f"< {INVOICE_GOAL_S:.0f} s",
            passed=run_s < INVOICE_GOAL_S,
            note="each instance ran the last day of the month, its hours already aggregated (final)",
            detail={"report": {k: str(v) for k, v in report.items()}, "database_bytes": size, "tables": tables},
        ),
    ]


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    sizes = sizes_for(quick)
    env.reset_data()
    now = timezone.now().replace(microsecond=0)
    figures: list[Figure] = []
    began = time.perf_counter()
    fleet = seed_fleet(sizes, now)
    seeded = time.perf_counter() - began
    size, tables = database_size()
    print(f"   seeded in {seeded:.0f} s ({fleet['timings']}); database {size / 2**30:.2f} GiB", flush=True)
    figures.append(
        Figure(
            AREA,
            f"database after seeding {sizes['hosts']:,} hosts, {sizes['instances']:,} instances "
            f"(state log, {ACTIONS_PER_INSTANCE} build action rows each), {sizes['tenants']:,} tenants",
            size / 2**20,
            "MiB",
            note=f"seeded with COPY in {seeded:.0f} s",
            detail={"tables": tables, "seed_seconds": fleet["timings"]},
        )
    )
    figures += measure_place(fleet, sizes)
    print(f"   {figures[-2].name}: {figures[-2].value:.2f} ms", flush=True)
    figures += measure_list(env, fleet, sizes)
    figures += measure_ingest(fleet, sizes, now)
    size, tables = database_size()
    figures.append(
        Figure(
            AREA,
            "database after one minute of samples of every instance",
            size / 2**20,
            "MiB",
            detail={"tables": tables},
        )
    )
    del fleet
    figures += measure_billing(env, sizes, now)
    return figures
