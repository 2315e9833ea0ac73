"""Item 4: `compute.scheduler.place` against 10 to 10,000 hosts in PostgreSQL.

Hosts are rows only (bulk_create; placement never talks to a hypervisor), of mixed sizes and
fill levels, a few of them down. Each placement runs in a transaction that is rolled back, so
every call sees the same hosts; the baseline is a `SELECT 1` round trip in a transaction of
its own, timed in the same loop, interleaved.
"""

from __future__ import annotations

import math
import random
import time
from decimal import Decimal

from django.db import connection, transaction

from bench import seed
from bench.environment import BenchEnvironment
from bench.report import Figure, percentile
from compute import scheduler
from compute.models import Host
from compute.sizing import Size

AREA = "scheduler"
HOSTS_FULL = [10, 100, 1_000, 10_000]
HOSTS_QUICK = [10, 100, 1_000]
TARGET_MS = 2.0  # issue 19
TARGET_AT = 1_000
REPEATS = 300
MAX_SECONDS = 8.0


def seed_hosts(count: int, rng: random.Random) -> None:
    hosts = []
    for n in range(count):
        cpus = rng.choice([16, 32, 64])
        memory = cpus * 4096
        fill = rng.random() * 0.9
        hosts.append(
            Host(
                name=f"sched-{n:05d}",
                uri="test:///default",
                queue=f"host.sched-{n:05d}",
                status=Host.Status.DOWN if rng.random() < 0.05 else Host.Status.UP,
                vcpus_total=cpus,
                memory_mb_total=memory,
                disk_gb_total=2000,
                vcpus_used=int(cpus * 4 * fill),
                memory_mb_used=int(memory * fill),
                disk_gb_used=int(2000 * fill),
                domain_type=Host.DomainType.TEST,
            )
        )
    Host.objects.bulk_create(hosts, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE compute_host")


def _timed_in_rolled_back_transaction(call) -> float:
    with transaction.atomic():
        began = time.perf_counter()
        call()
        elapsed = time.perf_counter() - began
        transaction.set_rollback(True)
    return elapsed


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def measure(size: Size, image) -> tuple[list[float], list[float]]:
    """(place() times, SELECT 1 times) in seconds, interleaved, after a warm-up."""
    for _ in range(20):
        _timed_in_rolled_back_transaction(lambda: scheduler.place(size, image))
        _timed_in_rolled_back_transaction(_select_one)
    placed, floor = [], []
    deadline = time.monotonic() + MAX_SECONDS
    while len(placed) < REPEATS and time.monotonic() < deadline:
        placed.append(_timed_in_rolled_back_transaction(lambda: scheduler.place(size, image)))
        floor.append(_timed_in_rolled_back_transaction(_select_one))
    return placed, floor


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    env.reset_data()
    image = seed.image()
    size = Size(vcpus=1, memory_mb=1024, disk_gb=10, bandwidth_mbit=100, traffic_gb=100, sla_percent=Decimal("99.9"))
    rng = random.Random(7)
    counts = HOSTS_QUICK if quick else HOSTS_FULL
    p50: dict[int, float] = {}
    figures = []
    for count in counts:
        Host.objects.all().delete()
        seed_hosts(count, rng)
        placed, floor = measure(size, image)
        p50[count] = percentile(placed, 50) * 1000
        p95 = percentile(placed, 95) * 1000
        held = count == TARGET_AT
        figures.append(
            Figure(
                AREA,
                f"place() at {count:,} hosts, p50 (p95 {p95:.2f} ms)",
                p50[count],
                "ms",
                baseline=percentile(floor, 50) * 1000,
                baseline_name="SELECT 1",
                target=f"< {TARGET_MS:g} ms" if held else "",
                passed=(p50[count] < TARGET_MS) if held else None,
                detail={"samples": len(placed), "p95_ms": p95, "select1_p95_ms": percentile(floor, 95) * 1000},
            )
        )
    Host.objects.all().delete()
    # Growth over the last decade of hosts: 1.0 is linear, below it better than linear.
    low, high = counts[-2], counts[-1]
    exponent = math.log(p50[high] / p50[low]) / math.log(high / low)
    figures.append(
        Figure(
            AREA,
            f"growth exponent of place() p50, {low:,} -> {high:,} hosts",
            exponent,
            "",
            target="<= 1.0 (linear)",
            passed=exponent <= 1.0,
            note="exponent k in time ~ hosts^k, from the p50s of the two largest host counts",
        )
    )
    return figures
