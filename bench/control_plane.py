"""Item 1: control-plane overhead, API POST -> RUNNING on libvirt's test driver.

Hosts are simulated (tests.simulated): one node file each, registered through
`host_register`. libvirt's test driver keeps a host's state in the process that opened it,
so each host's queue is served by exactly one of the two Celery worker processes
(`-P threads -c 4`, as `make run` starts them); the hosts' queues alternate between them.

For every (hosts, N) pair the run uses a set of hosts of its own, the others disabled, and
first builds one instance on each of them (and at least six), untimed: afterwards every host
has its base image and an open connection in its worker and both gunicorn workers have served
a create, the steady state of a working cloud. Then N instances
are requested at once (N client threads released together) through gunicorn, and each one's
latency is POST sent -> `launched_at`, which the worker stamps as it records RUNNING. For
N = 1 that is repeated a few times, one after the other.

The floor is the hypervisor's share alone: the same domains (the driver's own XML from
compute.drivers.libvirt_xml, on the same node files, placed on the same hosts) defined and
started directly with libvirt-python, in a loop, on fresh connections.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import libvirt
from django.db.models import Min

from bench import processes, seed
from bench.environment import BenchEnvironment
from bench.load import request_json
from bench.memory import RssSampler
from bench.report import Figure, percentile
from compute import cloudinit
from compute.driver_refs import host_ref, image_ref
from compute.drivers import libvirt_xml as lx
from compute.drivers.base import DomainSpec
from compute.drivers.libvirt import disk_volume, domain_name, driver_for, forget_connection, seed_volume
from compute.hosts import host_register
from compute.models import Host, Instance, InstanceAction, InstanceState
from tests.simulated import write_host

AREA = "control-plane"
FULL = {"hosts": [1, 10, 50], "batches": [1, 50, 200], "repeats": 10}
QUICK = {"hosts": [1, 10], "batches": [1, 20], "repeats": 5}
# Issue 19: POST -> RUNNING one at a time, and the largest batch on 2 worker processes.
P50_TARGET_MS = 20.0
RATE_TARGET = 50.0
P95_TARGET_MS = 3000.0
WORKERS = 2
WARM_UP = 6


@dataclass
class Batch:
    hosts: int
    size: int
    latencies: list[float]  # seconds, POST sent -> RUNNING, one per instance
    rate: float  # instances per second, first POST -> last RUNNING
    instance_ids: list[str]
    floor: list[float]
    floor_rate: float
    api_rate: float = 0.0  # POSTs answered per second (N > 1)
    cpu_ms_per_instance: dict | None = None  # CPU used by role during the batch, per instance
    # N = 1: p50 of each part of POST -> RUNNING, in ms (answered, queued, built)
    parts_ms: dict | None = None


def register_hosts(env: BenchEnvironment, tag: str, count: int, first_subnet: int) -> list[Host]:
    """Simulated hosts big enough for 200 small instances each (IP range: 241 addresses)."""
    directory = env.tmp / "hosts"
    directory.mkdir(exist_ok=True)
    hosts = []
    for n in range(count):
        args = write_host(directory, name=f"cp-{tag}-{n}", cpus=64, memory_mb=65536, subnet=first_subnet + n)
        hosts.append(host_register(**args))
    return hosts


def activate(hosts: list[Host]) -> None:
    ids = [host.pk for host in hosts]
    Host.objects.exclude(pk__in=ids).update(status=Host.Status.DISABLED)
    Host.objects.filter(pk__in=ids).update(status=Host.Status.UP)


class Client:
    def __init__(self, port: int, account: seed.Account, image, flavor):
        self.port = port
        self.headers = account.headers
        self.image = str(image.pk)
        self.flavor = str(flavor.pk)

    def create(self, name: str) -> str:
        status, body = request_json(
            self.port,
            "POST",
            "/api/v1/instances",
            headers=self.headers,
            body={"name": name, "image": self.image, "flavor": self.flavor},
        )
        if status != 202:
            raise RuntimeError(f"POST /api/v1/instances answered {status}: {body}")
        return body["id"]

    def create_together(self, names: list[str]) -> tuple[list[str], list[float], list[float]]:
        """POST every name at once, one thread each: (ids, wall-clock send and answer times)."""
        ids: list[str | None] = [None] * len(names)
        sent = [0.0] * len(names)
        answered = [0.0] * len(names)
        errors: list[BaseException] = []
        start_line = threading.Barrier(len(names))

        def one(index: int) -> None:
            try:
                start_line.wait(timeout=60)
                sent[index] = time.time()
                ids[index] = self.create(names[index])
                answered[index] = time.time()
            except BaseException as exc:  # reported below, in the calling thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(names))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        if errors:
            raise errors[0]
        return [str(i) for i in ids], sent, answered


def wait_running(ids: list[str], within: float) -> dict[str, float]:
    """Poll the database until every instance left BUILDING: {id: launched_at as a timestamp}."""
    deadline = time.monotonic() + within
    while True:
        rows = list(
            Instance.objects.filter(pk__in=ids).exclude(state=InstanceState.BUILDING).values_list("id", "state")
        )
        failed = [str(pk) for pk, state in rows if state != InstanceState.RUNNING]
        if failed:
            instance = Instance.objects.get(pk=failed[0])
            raise RuntimeError(
                f"instance {failed[0]} went {instance.state}: {instance.error_step} {instance.error_message}"
            )
        if len(rows) == len(ids):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - len(rows)} of {len(ids)} instances still building after {within:.0f} s")
        time.sleep(0.02)
    launched = Instance.objects.filter(pk__in=ids).values_list("id", "launched_at")
    return {str(pk): at.timestamp() for pk, at in launched}


def _domain_xml(instance: Instance) -> str:
    """What LibvirtDriver.ensure_defined sends for this instance (shaping as the host says)."""
    host = instance.host
    return lx.domain_xml(
        lx.DomainConfig(
            uuid=str(instance.pk),
            name=domain_name(str(instance.pk)),
            domain_type=host.domain_type,
            vcpus=instance.vcpus,
            memory_mb=instance.memory_mb,
            pool=host.storage_pool,
            disk_volume=disk_volume(str(instance.pk)),
            seed_volume=seed_volume(str(instance.pk)),
            network=host.network,
            mac=instance.mac_address,
            vnc_listen=host.vnc_listen,
            bandwidth_kbytes=instance.bandwidth_mbit * 1000 // 8 if host.shaping else None,
        )
    )


def libvirt_floor(ids: list[str]) -> tuple[list[float], float]:
    """Define and start the same domains on fresh test:/// connections: (per domain, total)."""
    instances = list(Instance.objects.select_related("host").filter(pk__in=ids))
    order = {pk: n for n, pk in enumerate(ids)}
    instances.sort(key=lambda i: order[str(i.pk)])
    documents = [(instance.host.uri, _domain_xml(instance)) for instance in instances]
    connections = {uri: libvirt.open(uri) for uri in {uri for uri, _xml in documents}}
    try:
        each = []
        began = time.perf_counter()
        for uri, xml in documents:
            one = time.perf_counter()
            connections[uri].defineXML(xml).create()
            each.append(time.perf_counter() - one)
        total = time.perf_counter() - began
    finally:
        for conn in connections.values():
            conn.close()
    return each, total


def driver_floor(ids: list[str]) -> list[float]:
    """The worker's hypervisor work alone: every driver call of a build, seed ISO included,
    in a loop in this process (no database, no Celery). Seconds per instance."""
    each = []
    instances = list(Instance.objects.select_related("host", "image").filter(pk__in=ids))
    for uri in {instance.host.uri for instance in instances}:
        forget_connection(uri)  # a fresh simulated host, not the one host_register probed
    for instance in instances:
        drv = driver_for(host_ref(instance.host))
        pk = str(instance.pk)
        began = time.perf_counter()
        drv.ensure_base_image(image_ref(instance.image))
        drv.ensure_disk(pk, image_ref(instance.image), instance.disk_gb)
        seed_iso = cloudinit.build_seed(
            uuid=pk, hostname=cloudinit.hostname_for(instance.name, pk), ssh_keys=[], user_data=""
        )
        drv.ensure_seed(pk, seed_iso)
        drv.ensure_dhcp(instance.mac_address, instance.ip_address, cloudinit.hostname_for(instance.name, pk))
        drv.ensure_defined(
            DomainSpec(
                uuid=pk,
                vcpus=instance.vcpus,
                memory_mb=instance.memory_mb,
                disk_gb=instance.disk_gb,
                mac=instance.mac_address,
                bandwidth_kbytes=instance.bandwidth_mbit * 1000 // 8,
            )
        )
        drv.start(pk)
        each.append(time.perf_counter() - began)
    return each


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far: by this process, the web and the workers, and the machine."""
    busy, total = processes.machine_cpu_busy()
    used = {"bench": time.process_time(), "machine_busy": busy, "machine_total": total}
    for service in processes.running():
        used[service.role] = used.get(service.role, 0.0) + processes.cpu_seconds(service.pids())
    return used


def run_batch(client: Client, hosts: list[Host], size: int, repeats: int, after_warm_up=None) -> Batch:
    activate(hosts)
    # Warm-up, untimed: one instance per host (sequential POSTs, so the spread weigher puts one
    # on each), and at least WARM_UP in all, so both gunicorn workers have served a create.
    warm = [client.create(f"warm-{uuid.uuid4().hex[:10]}") for _ in range(max(len(hosts), WARM_UP))]
    wait_running(warm, within=60 + 2 * len(warm))
    if after_warm_up:
        after_warm_up()
    latencies: list[float] = []
    ids: list[str] = []
    api_rate = 0.0
    cpu_before = cpu_by_role()
    parts_ms = None
    if size == 1:
        answers = []
        for _ in range(repeats):
            sent = time.time()
            pk = client.create(f"one-{uuid.uuid4().hex[:10]}")
            answers.append((sent, time.time()))
            launched = wait_running([pk], within=60)
            latencies.append(launched[pk] - sent)
            ids.append(pk)
        rate = len(ids) / sum(latencies)
        parts_ms = timeline(ids, answers)
    else:
        names = [f"n{size}-{uuid.uuid4().hex[:10]}" for _ in range(size)]
        ids, sent, answered = client.create_together(names)
        launched = wait_running(ids, within=60 + size)
        latencies = [launched[pk] - at for pk, at in zip(ids, sent, strict=True)]
        rate = size / (max(launched.values()) - min(sent))
        api_rate = size / (max(answered) - min(sent))
    cpu_after = cpu_by_role()
    used = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
    machine_total, machine_busy = used.pop("machine_total"), used.pop("machine_busy")
    cpu = {role: round(seconds * 1000 / len(ids), 1) for role, seconds in used.items()}
    # How busy the whole machine was meanwhile (1.0: every core), with our work and others'.
    cpu["machine_busy_fraction"] = round(machine_busy / machine_total, 2) if machine_total else None
    floor, floor_total = libvirt_floor(ids)
    return Batch(len(hosts), size, latencies, rate, ids, floor, len(floor) / floor_total, api_rate, cpu, parts_ms)


def timeline(ids: list[str], answers: list[tuple[float, float]]) -> dict[str, float]:
    """Where one create's time went, p50 of each part in ms: the POST answered (web), the
    build's first step begun (Celery's hop: publish, Redis, the worker taking it up), RUNNING
    recorded (the build task). From the clocks of one machine: the bench's, and the web's and
    the worker's timestamps in the database."""
    first_step = dict(
        InstanceAction.objects.filter(instance_id__in=ids, action="create")
        .exclude(step="")
        .values("instance_id")
        .annotate(first=Min("started_at"))
        .values_list("instance_id", "first")
    )
    launched = dict(Instance.objects.filter(pk__in=ids).values_list("id", "launched_at"))
    parts: dict[str, list[float]] = {"answered": [], "queued": [], "built": []}
    for pk, (sent, answered) in zip(ids, answers, strict=True):
        began = first_step[uuid.UUID(pk)].timestamp()
        parts["answered"].append(answered - sent)
        parts["queued"].append(began - answered)
        parts["built"].append(launched[uuid.UUID(pk)].timestamp() - began)
    return {name: round(percentile(values, 50) * 1000, 1) for name, values in parts.items()}


def _figures(batch: Batch, largest: int) -> list[Figure]:
    where = f"{batch.size} concurrent on {batch.hosts} host{'s' if batch.hosts > 1 else ''}"
    if batch.size == 1:
        where = f"1 at a time ({len(batch.latencies)}x) on {batch.hosts} host{'s' if batch.hosts > 1 else ''}"
    p50, floor50 = percentile(batch.latencies, 50) * 1000, percentile(batch.floor, 50) * 1000
    p95, floor95 = percentile(batch.latencies, 95) * 1000, percentile(batch.floor, 95) * 1000
    held = batch.size == largest and batch.size > 1 and batch.hosts >= WORKERS
    detail = {
        "latencies_ms": [round(x * 1000, 1) for x in batch.latencies],
        "instances": len(batch.instance_ids),
        "api_posts_per_s": batch.api_rate,
        "cpu_ms_per_instance": batch.cpu_ms_per_instance,
        "parts_ms": batch.parts_ms,
    }
    figures = [
        Figure(
            AREA,
            f"{where}: POST->RUNNING p50" + (f" (overhead {p50 - floor50:.0f} ms)" if batch.size == 1 else ""),
            p50,
            "ms",
            baseline=floor50,
            baseline_name="libvirt define+start",
            target=f"<= {P50_TARGET_MS:.0f} ms" if batch.size == 1 else "",
            passed=(p50 <= P50_TARGET_MS) if batch.size == 1 else None,
            detail=detail,
        ),
        Figure(
            AREA,
            f"{where}: POST->RUNNING p95",
            p95,
            "ms",
            baseline=floor95,
            baseline_name="libvirt define+start",
            target=f"<= {P95_TARGET_MS:.0f} ms" if held else "",
            passed=(p95 <= P95_TARGET_MS) if held else None,
        ),
    ]
    if batch.size > 1:
        figures.append(
            Figure(
                AREA,
                f"{where}: instances/s",
                batch.rate,
                "/s",
                baseline=batch.floor_rate,
                baseline_name="libvirt loop",
                target=f">= {RATE_TARGET:.0f}/s" if held else "",
                passed=(batch.rate >= RATE_TARGET) if held else None,
                note="one host's queue is served by one worker process (test-driver state is per process)"
                if batch.hosts == 1
                else "",
            )
        )
    return figures


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    sizes = QUICK if quick else FULL
    env.reset_data()
    account = seed.account()
    image, flavor = seed.image(), seed.flavor()
    # A set of hosts of its own for every (hosts, N) pair, all registered before the workers
    # start, since a worker serves the queues it is given at start.
    plan: list[tuple[int, int, list[Host]]] = []
    subnet = 1
    for count in sizes["hosts"]:
        for size in sizes["batches"]:
            plan.append((count, size, register_hosts(env, f"{count}h{size}n", count, subnet)))
            subnet += count
    queues = [host.queue for _count, _size, hosts in plan for host in hosts]
    figures: list[Figure] = []
    batches: list[Batch] = []
    with RssSampler() as sampler:
        web = processes.start_web(env)
        workers = processes.start_workers(env, [queues[n::WORKERS] for n in range(WORKERS)])
        client = Client(web.port, account, image, flavor)
        try:
            for count, size, hosts in plan:
                began = time.monotonic()
                batch = run_batch(
                    client, hosts, size, sizes["repeats"], after_warm_up=None if batches else sampler.mark_baseline
                )
                batches.append(batch)
                figures += _figures(batch, max(sizes["batches"]))
                print(
                    f"   {size} on {count} host(s): p50 {percentile(batch.latencies, 50) * 1000:.0f} ms, "
                    f"{batch.rate:.1f}/s (POSTs answered at {batch.api_rate:.0f}/s), "
                    f"CPU ms per instance {batch.cpu_ms_per_instance}"
                    + (f", p50 parts {batch.parts_ms}" if batch.parts_ms else "")
                    + f" ({time.monotonic() - began:.0f} s)",
                    flush=True,
                )
            sampler.sample()
        finally:
            processes.stop([*workers, web])
    # Where the time goes: the worker's hypervisor calls alone, on the biggest batch.
    biggest = max(batches, key=lambda b: (b.size, b.hosts))
    calls = driver_floor(biggest.instance_ids)
    figures.append(
        Figure(
            AREA,
            "hypervisor work of one build (all driver calls + seed ISO, no DB/Celery), p50",
            percentile(calls, 50) * 1000,
            "ms",
            baseline=percentile(biggest.floor, 50) * 1000,
            baseline_name="libvirt define+start",
            note="driver calls timed in a loop in the bench process on the biggest batch's instances",
        )
    )
    return figures + sampler.figures(during="control-plane")
