"""Issue 16: a bulk create of 20 tiny guests to all-leased, against 20 single creates.

Real guests on qemu:///system: the tiny image, 1 vCPU and 256 MiB. Bulk: one POST
/api/v1/instances with `count: 20`, timed from the POST until every guest has its DHCP lease.
Singles: 20 POSTs one after the other, each waiting for its 202 only, timed from the first POST
until every guest has its lease. Both through gunicorn; each guest is destroyed as soon as it
has its lease, so the machine carries only those still booting. Rounds alternate, bulk first
(bulk, singles, singles, bulk; one of each with --quick); the figures are the medians.

Each round has two fresh hosts (`bench.real_vm.real_host`: a dir pool and an isolated network
of their own, removed after the round), each with its own worker (4 threads), so the 20 guests
are spread 10 and 10. Two, not one: when this was written, one of compute.localhost's networks
gave no 17th guest an address (libvirt's `dhcp-lease-max` from a 16-address dynamic range; fixed
since, docs/performance.md "Bulk create"), and two keep the figures comparable.

Where no real guest can boot (no libvirtd or QEMU), the same comparison runs on a simulated
host (libvirt's test driver), to all-RUNNING instead of all-leased, and its figures say so.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import libvirt

from bench import processes, seed
from bench.environment import BenchEnvironment
from bench.load import request_json
from bench.real_vm import (
    URI,
    build_tiny_image,
    destroy,
    real_host,
    remove_everything,
    remove_with_own_connection,
    tiny_image,
    unavailable,
)
from bench.report import Figure, percentile, skipped
from compute.hosts import host_register
from compute.models import Host, Instance, InstanceState
from tests.simulated import write_host

AREA = "bulk-create"
COUNT = 20
SETTLE_WITHIN = 600.0
CPU_RATIO = Decimal("16.00")

# The ids of a round's instances not settled yet -> their MACs.
Pending = dict[str, str]


class Rounds:
    def __init__(self, port: int, headers: dict[str, str], image, flavor):
        self.port, self.headers, self.image, self.flavor = port, headers, image, flavor

    def _post(self, body: dict) -> tuple[float, dict]:
        began = time.monotonic()
        status, answer = request_json(
            self.port,
            "POST",
            "/api/v1/instances",
            headers=self.headers,
            body={"image": str(self.image.pk), "flavor": str(self.flavor.pk), **body},
        )
        if status != 202:
            raise RuntimeError(f"POST /api/v1/instances answered {status}: {answer}")
        return time.monotonic() - began, answer

    def bulk(self, settled: Callable[[Pending], None]) -> tuple[float, float]:
        """(seconds in the one POST, seconds from it to all settled)."""
        began = time.monotonic()
        api_s, answer = self._post({"name": f"b-{uuid.uuid4().hex[:6]}-{{n:02}}", "count": COUNT})
        return api_s, self._wait({i["id"]: i["mac_address"] for i in answer["instances"]}, began, settled)

    def singles(self, settled: Callable[[Pending], None]) -> tuple[float, float]:
        """(seconds in the 20 POSTs together, seconds from the first to all settled)."""
        tag = uuid.uuid4().hex[:6]
        began = time.monotonic()
        api_s, pending = 0.0, {}
        for n in range(1, COUNT + 1):
            spent, answer = self._post({"name": f"s-{tag}-{n:02}"})
            api_s += spent
            pending[answer["id"]] = answer["mac_address"]
        return api_s, self._wait(pending, began, settled)

    @staticmethod
    def _wait(pending: Pending, began: float, settled: Callable[[Pending], None]) -> float:
        while pending:
            settled(pending)
            failed = list(
                Instance.objects.filter(pk__in=list(pending), state=InstanceState.ERROR).values_list(
                    "name", "error_step", "error_message"
                )
            )
            if failed:
                raise RuntimeError(f"instances went to error: {failed}")
            if time.monotonic() - began > SETTLE_WITHIN:
                raise RuntimeError(f"{len(pending)} of {COUNT} not settled within {SETTLE_WITHIN:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - began


def leased_on(conn: libvirt.virConnect, networks: list[libvirt.virNetwork]) -> Callable[[Pending], None]:
    """Takes the guests that have a lease out of `pending`, destroying each at once."""

    def settled(pending: Pending) -> None:
        macs = {lease["mac"].lower() for network in networks for lease in network.DHCPLeases()}
        done = [pk for pk, mac in pending.items() if mac.lower() in macs]
        for pk in done:
            destroy(conn, pk)
            del pending[pk]

    return settled


def running(pending: Pending) -> None:
    """Takes the instances that are RUNNING out of `pending`."""
    done = [
        str(pk)
        for pk in Instance.objects.filter(pk__in=list(pending), state=InstanceState.RUNNING).values_list(
            "pk", flat=True
        )
    ]
    for pk in done:
        del pending[pk]


def order(quick: bool) -> list[str]:
    return ["bulk", "singles"] if quick else ["bulk", "singles", "singles", "bulk"]


def note_round(got: dict[str, list[tuple[float, float]]], kind: str, result: tuple[float, float]) -> None:
    got[kind].append(result)
    print(f"   {kind}: {result[1]:.1f} s to all settled ({result[0]:.2f} s in POSTs)", flush=True)


def figures(got: dict[str, list[tuple[float, float]]], what: str, to: str, note: str = "") -> list[Figure]:
    bulk_settled = percentile([s for _a, s in got["bulk"]], 50)
    singles_settled = percentile([s for _a, s in got["singles"]], 50)
    bulk_api = percentile([a for a, _s in got["bulk"]], 50)
    singles_api = percentile([a for a, _s in got["singles"]], 50)
    rounds = len(got["bulk"])
    return [
        Figure(
            AREA,
            f"{COUNT} {what}: one POST with count -> all {to}, median of {rounds}",
            bulk_settled,
            "s",
            baseline=singles_settled,
            baseline_name=f"{COUNT} single POSTs -> all {to}",
            note=note,
            detail={"bulk_s": got["bulk"], "singles_s": got["singles"], "as": "(seconds in POSTs, to all settled)"},
        ),
        Figure(
            AREA,
            f"{COUNT} {what}: the POST with count, median of {rounds}",
            bulk_api,
            "s",
            baseline=singles_api,
            baseline_name=f"{COUNT} single POSTs, one after the other",
            note=note,
        ),
    ]


def pool_dir_of(name: str) -> Path:
    return Path("/var/lib/libvirt/images") / f"portal-{name}"


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    if reason := unavailable():
        return simulated(env, quick=quick, why=reason)
    if reason := build_tiny_image():
        return [skipped(AREA, reason)]
    env.reset_data()
    account = seed.account()
    image, flavor = tiny_image()
    conn = libvirt.open(URI)
    got: dict[str, list[tuple[float, float]]] = {"bulk": [], "singles": []}
    made: list[str] = []
    try:
        web = processes.start_web(env)
        rounds = Rounds(web.port, account.headers, image, flavor)
        for number, kind in enumerate(order(quick)):
            names = [f"bulk-{env.run_id}-{number}{side}" for side in "ab"]
            for name in names:
                made.append(name)
                env.on_cleanup(lambda name=name: remove_with_own_connection(name, pool_dir_of(name)))
            hosts = [
                real_host(name, pool_dir_of(name), f"vbk{env.run_id[:4]}{number}{side}", image)
                for name, side in zip(names, "ab", strict=True)
            ]
            # Ten of 1 vCPU on a host of 2 CPUs: more than the default overcommit of 4.
            Host.objects.filter(pk__in=[host.pk for host in hosts]).update(cpu_ratio=CPU_RATIO)
            workers = processes.start_workers(env, [[host.queue] for host in hosts])
            settled = leased_on(conn, [conn.networkLookupByName(name) for name in names])
            note_round(got, kind, getattr(rounds, kind)(settled))
            processes.stop(workers)
            # The next round's guests go to the next round's hosts only.
            Host.objects.filter(pk__in=[host.pk for host in hosts]).update(status=Host.Status.DISABLED)
            for name in names:
                remove_everything(conn, name, pool_dir_of(name))
    finally:
        processes.stop_all()
        for name in made:
            remove_everything(conn, name, pool_dir_of(name))
        conn.close()
    return figures(got, f"tiny guests ({hosts[0].domain_type}, 1 vCPU, 256 MiB, 2 hosts)", "leased")


def simulated(env: BenchEnvironment, *, quick: bool, why: str) -> list[Figure]:
    """The same rounds on a host of libvirt's test driver: to all-RUNNING, no guest boots."""
    env.reset_data()
    account = seed.account()
    directory = env.tmp / "bulk-hosts"
    directory.mkdir(exist_ok=True)
    host = host_register(**write_host(directory, name=f"bulk-{env.run_id}", cpus=64, memory_mb=65536, subnet=1))
    image, flavor = seed.image(), seed.flavor()
    got: dict[str, list[tuple[float, float]]] = {"bulk": [], "singles": []}
    try:
        web = processes.start_web(env)
        processes.start_workers(env, [[host.queue]])
        rounds = Rounds(web.port, account.headers, image, flavor)
        for kind in order(quick):
            note_round(got, kind, getattr(rounds, kind)(running))
    finally:
        processes.stop_all()
        shutil.rmtree(directory, ignore_errors=True)
    return figures(got, "instances on a simulated host", "RUNNING", note=f"simulated host: {why}")
