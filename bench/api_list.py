"""Item 3: GET /api/v1/instances, pages of 50, with 10,000 instances, under gunicorn.

The instances are rows only (bulk_create: none of them needs to run), each with the action
log a finished build leaves (the request plus six steps), since the list annotates build
progress from it. gunicorn serves on 127.0.0.1 as `make run` starts it (2 workers x 4
threads); client threads on keep-alive connections ask for random numbered pages, or walk
the cursor pages by their `next` links, bounded in count and time. The baseline is GET
/healthz (one `SELECT 1`) on the same server, same clients. Three rounds of each, interleaved;
each figure is the median round.
"""

from __future__ import annotations

import ipaddress
import random
import statistics
import time
import uuid
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from bench import processes, seed
from bench.environment import BenchEnvironment
from bench.load import LoadResult, Rounds, drive
from bench.memory import RssSampler
from bench.report import Figure
from compute.models import Host, Instance, InstanceAction, InstanceState
from compute.services import mac_for
from compute.sizing import Size
from compute.transitions import PROVISION_STEPS

AREA = "api"
PAGE_SIZE = 50
# Issue 19: 600 requests/s, or 0.35 of /healthz on the same server (the machine's speed varies).
TARGET_RPS = 600.0
TARGET_RATIO = 0.35
FULL = {"instances": 10_000, "requests": 4_000, "seconds": 20.0, "rounds": 3}
QUICK = {"instances": 1_000, "requests": 600, "seconds": 5.0, "rounds": 1}
CLIENTS = (1, 8)


def seed_instances(account: seed.Account, count: int) -> None:
    image, flavor = seed.image(), seed.flavor(name="bench.small", memory_mb=1024, disk_gb=10)
    host = Host.objects.create(
        name="api-bench",
        uri="test:///default",
        queue="host.api-bench",
        vcpus_total=100_000,
        memory_mb_total=100_000_000,
        disk_gb_total=10_000_000,
        domain_type=Host.DomainType.TEST,
    )
    now = timezone.now()
    rng = random.Random(3)
    first_ip = int(ipaddress.ip_address("10.0.0.1"))
    instances = []
    for n in range(count):
        pk = uuid.uuid4()
        created = now - timedelta(minutes=count - n)
        state = rng.choices([InstanceState.RUNNING, InstanceState.STOPPED, InstanceState.ERROR], [85, 10, 5])[0]
        instances.append(
            Instance(
                id=pk,
                tenant=account.tenant,
                name=f"vm-{n:05d}",
                image=image,
                flavor=flavor,
                **Size.of_flavor(flavor).as_fields(),
                host=host,
                state=state,
                power_state="running" if state == InstanceState.RUNNING else "shutoff",
                ip_address=str(ipaddress.ip_address(first_ip + n)),
                mac_address=mac_for(pk),
                created_by=account.user,
                created_at=created,
                launched_at=created + timedelta(seconds=1),
            )
        )
    Instance.objects.bulk_create(instances, batch_size=2000)
    actions = []
    for instance in instances:
        actions.append(
            InstanceAction(
                instance=instance,
                action="create",
                status=InstanceAction.Status.REQUESTED,
                user=account.user,
                started_at=instance.created_at,
            )
        )
        for step in PROVISION_STEPS:
            actions.append(
                InstanceAction(
                    instance=instance,
                    action="create",
                    step=step,
                    status=InstanceAction.Status.DONE,
                    started_at=instance.created_at,
                    duration_ms=5,
                )
            )
    InstanceAction.objects.bulk_create(actions, batch_size=5000)
    # What autovacuum does within a minute of such a bulk insert: statistics, and the visibility
    # map that lets PostgreSQL count and page through the index alone.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def measured(
    web: processes.Service,
    next_path,
    *,
    headers: dict,
    clients: int,
    requests: int,
    seconds: float,
    follow_next: bool = False,
):
    """Drive a load and say what CPU it cost per request, in the web workers and in this client."""
    web_before, client_before = processes.cpu_seconds(web.pids()), time.process_time()
    result = drive(
        web.port,
        next_path,
        headers=headers,
        clients=clients,
        max_requests=requests,
        max_seconds=seconds,
        follow_next=follow_next,
    )
    done = max(1, len(result.latencies))
    return result, {
        "web_cpu_ms_per_request": (processes.cpu_seconds(web.pids()) - web_before) * 1000 / done,
        "client_cpu_ms_per_request": (time.process_time() - client_before) * 1000 / done,
    }


# The two ways through the list: numbered pages picked at random (each answer counts all
# 10,000 rows and skips to its OFFSET), and clients walking the keyset pages by their `next`
# links, as a program listing its instances does. The target is held against the walk.
MODES = (
    ("pages", "?page=<random>", False),
    ("cursor", "?cursor= then next links", True),
)


def _figures(
    clients: int, listed: LoadResult, health: LoadResult, count: int, cpu: dict, *, how: str, held: bool
) -> list[Figure]:
    held = held and clients == max(CLIENTS)
    plural = "s" if clients > 1 else ""
    what = f"GET /api/v1/instances{how} ({PAGE_SIZE}/page of {count:,}), {clients} client{plural}"
    detail = {
        "requests": len(listed.latencies),
        "errors": listed.errors,
        "statuses": dict(listed.statuses),
        "healthz_requests": len(health.latencies),
        "healthz_errors": health.errors,
        "p50_ms": listed.p(50) * 1000,
        "healthz_p50_ms": health.p(50) * 1000,
        **cpu,
    }
    note = f"{listed.errors} failed list requests" if listed.errors else ""
    return [
        Figure(
            AREA,
            f"{what}: requests/s",
            listed.rate,
            "req/s",
            baseline=health.rate,
            baseline_name="GET /healthz",
            target=f">= {TARGET_RPS:.0f} req/s or >= {TARGET_RATIO} of /healthz" if held else "",
            passed=((listed.rate >= TARGET_RPS or listed.rate >= TARGET_RATIO * health.rate) and not listed.errors)
            if held
            else None,
            note=note,
            detail=detail,
        ),
        Figure(
            AREA,
            f"{what}: p95 latency",
            listed.p(95) * 1000,
            "ms",
            baseline=health.p(95) * 1000,
            baseline_name="GET /healthz",
        ),
    ]


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    sizes = QUICK if quick else FULL
    env.reset_data()
    account = seed.account()
    seed_instances(account, sizes["instances"])
    pages = max(1, sizes["instances"] // PAGE_SIZE)
    figures: list[Figure] = []
    with RssSampler() as sampler:
        web = processes.start_web(env)
        try:
            headers = account.headers
            # Warm-up: both gunicorn workers import, connect and fill their caches.
            measured(web, lambda: "/api/v1/instances?page=1", headers=headers, clients=4, requests=40, seconds=30)
            measured(web, lambda: "/healthz", headers=headers, clients=4, requests=40, seconds=30)
            sampler.mark_baseline()
            for clients in CLIENTS:
                # Rounds interleave the baseline and both ways, so a burst of other work on the
                # machine falls on all of them; each figure is the median round.
                health_rounds, listed_rounds = [], {mode: [] for mode, _how, _held in MODES}
                health_cpu, cpus = [], {mode: [] for mode, _how, _held in MODES}
                for _round in range(sizes["rounds"]):
                    health, cpu = measured(
                        web,
                        lambda: "/healthz",
                        headers=headers,
                        clients=clients,
                        requests=sizes["requests"],
                        seconds=sizes["seconds"] / 2,
                    )
                    health_rounds.append(health)
                    health_cpu.append(cpu)
                    for mode, _how, _held in MODES:
                        first = (
                            (lambda: "/api/v1/instances?cursor=")
                            if mode == "cursor"
                            else (lambda: f"/api/v1/instances?page={random.randint(1, pages)}")
                        )
                        listed, cpu = measured(
                            web,
                            first,
                            headers=headers,
                            clients=clients,
                            requests=sizes["requests"],
                            seconds=sizes["seconds"],
                            follow_next=mode == "cursor",
                        )
                        listed_rounds[mode].append(listed)
                        cpus[mode].append(cpu)
                health = Rounds.of(health_rounds)
                for mode, how, held in MODES:
                    listed = Rounds.of(listed_rounds[mode])
                    cpu = {key: statistics.mean(c[key] for c in cpus[mode]) for key in cpus[mode][0]}
                    cpu.update({f"healthz_{key}": statistics.mean(c[key] for c in health_cpu) for key in health_cpu[0]})
                    cpu["round_rates"] = listed.round_rates
                    cpu["healthz_round_rates"] = health.round_rates
                    figures += _figures(clients, listed, health, sizes["instances"], cpu, how=how, held=held)
            sampler.sample()
        finally:
            processes.stop([web])
    return figures + sampler.figures(during="api")
