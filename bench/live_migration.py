"""Issue 16: a live migration through the portal against a plain `virsh migrate` of the same guest.

Two real libvirt hosts on this machine, each a libvirtd in its own namespaces
(tests/multihost/hosts.py, portal/scripts/second-host.sh), with a dir pool and an isolated
network made by compute.localhost as the multi-host tests make them, both of one segment (so a
running guest may move between them, keeping its address), each served by its own worker on its
own queue. The migration stream goes host to host through this side, which forwards IPv4 for
the hosts' veths alone (second-host.sh).

Two guests of the tiny image (1 vCPU, 128 MiB, TCG unless ALLOW_KVM) run on the first host:
- the portal's, made through the API; each run is an operator's POST
  /api/v1/admin/instances/{id}/migrate to the other host, timed from the POST until the
  instance is RUNNING on the target (its switch step: the disk copied, the memory moved, the
  claims and address moved over). The source's clean-up after that is not timed.
- a plain one, defined through the same driver calls as a build (disk, seed, DHCP entry,
  definition) and started: the same guest, so with the same bandwidth limit and the same
  packet filter, a copy of the portal guest's filters under the bench's own names defined on
  both hosts (libvirt instantiates a guest's filter for the incoming QEMU, and that cost is
  the hypervisor's for this guest, not the portal's); each run is `virsh migrate --live
  --copy-storage-all --persistent --undefinesource` with the domain's XML for the target
  (its pool, network and VNC address: what the portal's driver sends too), timed around virsh
  alone. The target's empty disk and seed are made beforehand, untimed; the portal times its
  own (prepare, seed, dhcp, firewall).
The guests move back and forth, runs alternating, portal first; 3 of each (1 with --quick),
and the figures are the medians. Both guests are waited for (a DHCP lease) before the first run.

Skipped, with the reason printed, where a second host cannot run: not root, a tool missing, no
namespaces, no QEMU. Everything it made goes at the end: domains, pools and networks on the two
daemons, the daemons, their namespaces and state directories, the workers and the web server.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import libvirt
from django.conf import settings

from bench import processes, seed
from bench.environment import BenchEnvironment
from bench.load import request_json
from bench.real_vm import build_tiny_image, lease_of, tiny_image
from bench.report import Figure, percentile, skipped
from compute import cloudinit, firewall, localhost
from compute.driver_refs import host_ref, image_ref
from compute.drivers import libvirt_xml as lx
from compute.drivers.base import DomainSpec, PacketFilter
from compute.drivers.libvirt import console_log_volume, driver_for, forget_connection
from compute.hosts import host_register
from compute.models import Host, Instance, InstanceAction, InstanceState, IpPool
from compute.services import mac_for
from tenants.models import User
from tests.multihost import hosts as namespaced

AREA = "live-migration"
TARGET_RATIO = 1.2
SETTLE_WITHIN = 300.0  # two cores, TCG: a boot or a move can take a minute when loaded
MEMORY_MB = 128


def wait_for(what: str, check, within: float = SETTLE_WITHIN, every: float = 0.05):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise RuntimeError(f"{what}: not within {within:.0f} s")


class Unavailable(Exception):
    """This machine cannot run the area (said as the reason it was skipped)."""


class Site:
    """The two namespaced hosts, registered as one segment; undone by `remove`."""

    def __init__(self, env: BenchEnvironment):
        self.env = env
        self.names = [f"lm-{env.run_id}-{side}" for side in "ab"]
        self.spaces: list[namespaced.NamespacedHost] = []
        self.hosts: list[Host] = []
        self.gone: set[str] = set()

    def bring_up(self, image) -> None:
        segment = f"lm-{self.env.run_id}"
        for index, name in enumerate(self.names):
            self.env.on_cleanup(lambda name=name: self._tear_down(name))
            ns = namespaced.bring_up(name)
            self.spaces.append(ns)
            plan = localhost.prepare(
                ns.uri,
                pool=name,
                pool_dir=ns.pool_dir / name,
                network=name,
                bridge=namespaced.BRIDGE,
                gateway_index=index,
            )
            host = host_register(
                name=name,
                uri=ns.uri,
                storage_pool=name,
                network=name,
                vnc_listen=ns.address,
                shaping=localhost.kernel_can_shape(),
                allow_kvm=settings.ALLOW_KVM,
                pool_first=plan["pool_first"],
                pool_last=plan["pool_last"],
                segment=segment,
            )
            driver_for(host_ref(host)).ensure_base_image(image_ref(image))
            self.hosts.append(host)
        tag = self.env.run_id[:6]
        first, second = self.spaces
        # One L2 segment: the guests' bridges joined.
        namespaced.veth(first, second, f"lms{tag}a", f"lms{tag}b")
        for ns, end in ((first, f"lms{tag}a"), (second, f"lms{tag}b")):
            done = ns.in_namespace("ip", "link", "set", end, "master", namespaced.BRIDGE)
            if done.returncode != 0:
                raise RuntimeError(f"joining the bridges: {done.stderr.strip()}")
        if not (first.forwards() and second.forwards()):
            raise Unavailable("IPv4 forwarding could not be switched on for the hosts' veths")

    def other(self, host_id) -> Host:
        return next(host for host in self.hosts if host.pk != host_id)

    def remove(self) -> None:
        for name in reversed(self.names):
            self._tear_down(name)

    def _tear_down(self, name: str) -> None:
        if name in self.gone:
            return  # the environment's safety net, after `remove` did it
        self.gone.add(name)
        ns = next((ns for ns in self.spaces if ns.name == name), None)
        if ns is not None:
            forget_connection(ns.uri)
            namespaced.remove_libvirt_objects(ns, network=name, pools=(name,))
        namespaced.tear_down(name)  # safe to run again, and on a host half up


class PortalGuest:
    """The instance the portal moves: made through the API, moved by an operator's POST."""

    def __init__(self, site: Site, port: int, headers: dict[str, str], image, flavor):
        self.site, self.port, self.headers = site, port, headers
        first, second = site.hosts
        Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)  # it lands on the first
        status, body = request_json(
            port,
            "POST",
            "/api/v1/instances",
            headers=headers,
            body={"name": "lm-portal", "image": str(image.pk), "flavor": str(flavor.pk)},
        )
        if status != 202:
            raise RuntimeError(f"POST /api/v1/instances answered {status}: {body}")
        self.id, self.mac = body["id"], body["mac_address"]
        self.moves = 0
        wait_for("the portal's guest running", lambda: self._state() == InstanceState.RUNNING)
        Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)

    def _state(self) -> str:
        state = Instance.objects.filter(pk=self.id).values_list("state", flat=True).first()
        if state == InstanceState.ERROR:
            instance = Instance.objects.get(pk=self.id)
            raise RuntimeError(f"the portal's guest failed at {instance.error_step}: {instance.error_message}")
        return state

    def host(self) -> Host:
        return Host.objects.get(instances__pk=self.id)

    def move(self) -> float:
        """Seconds from the operator's POST to RUNNING on the other host."""
        target = self.site.other(self.host().pk)
        began = time.monotonic()
        status, body = request_json(
            self.port,
            "POST",
            f"/api/v1/admin/instances/{self.id}/migrate",
            headers=self.headers,
            body={"host": str(target.pk)},
        )
        if status != 202:
            raise RuntimeError(f"POST .../migrate answered {status}: {body}")

        def arrived() -> bool:
            if self._state() == InstanceState.RUNNING:
                if Instance.objects.filter(pk=self.id, host=target).exists():
                    return True
                failed = InstanceAction.objects.filter(instance_id=self.id, action="migrate", status="failed")
                raise RuntimeError(f"the migration failed: {list(failed.values_list('step', 'error'))}")
            return False

        wait_for("the portal's guest running on the target", arrived, every=0.02)
        elapsed = time.monotonic() - began
        # The source's clean-up runs after the switch; the next run waits for it, untimed.
        wait_for(
            "the source's clean-up",
            lambda: (
                InstanceAction.objects.filter(
                    instance_id=self.id, action="migrate", step="cleanup", status__in=["done", "failed"]
                ).count()
                >= self.moves + 1
            ),
        )
        self.moves += 1
        return elapsed

    def step_medians_ms(self) -> dict[str, float]:
        durations: dict[str, list[float]] = {}
        steps = InstanceAction.objects.filter(instance_id=self.id, action="migrate").exclude(step="")
        for step, ms in steps.values_list("step", "duration_ms"):
            durations.setdefault(step, []).append(ms or 0)
        return {step: percentile(values, 50) for step, values in durations.items()}


class PlainGuest:
    """The same guest defined by the driver's calls alone, moved by `virsh migrate`."""

    def __init__(self, site: Site, image, flavor, scratch: Path, portal_guest: PortalGuest):
        self.site, self.scratch = site, scratch
        self.uuid = str(uuid.uuid4())
        self.packet_filter = same_filters(site, portal_guest, f"bench.lm.{self.uuid[:8]}.")
        self.mac = mac_for(uuid.UUID(self.uuid))
        self.host = site.hosts[0]
        pool = IpPool.objects.get(host=self.host)
        # The top of the range: the portal allocates from the bottom.
        self.ip = str(ipaddress.ip_address(pool.last) - 1)
        self.seed = cloudinit.build_seed(
            uuid=self.uuid, hostname=cloudinit.hostname_for("lm-plain", self.uuid), ssh_keys=[], user_data=""
        )
        drv = driver_for(host_ref(self.host))
        drv.ensure_disk(self.uuid, image_ref(image), flavor.disk_gb)
        drv.ensure_seed(self.uuid, self.seed)
        drv.ensure_dhcp(self.mac, self.ip, f"lm-plain-{self.uuid[:8]}")
        drv.ensure_defined(
            DomainSpec(
                uuid=self.uuid,
                vcpus=flavor.vcpus,
                memory_mb=flavor.memory_mb,
                disk_gb=flavor.disk_gb,
                mac=self.mac,
                bandwidth_kbytes=flavor.bandwidth_mbit * 1000 // 8 if self.host.shaping else None,
                ip=self.ip,
                packet_filter=self.packet_filter,
            )
        )
        drv.start(self.uuid)

    def move(self) -> float:
        """Seconds in `virsh migrate`, the target's empty disk and seed made beforehand."""
        source, target = self.host, self.site.other(self.host.pk)
        src, dst = driver_for(host_ref(source)), driver_for(host_ref(target))
        dst.prepare_disk(self.uuid, src.disk_capacity(self.uuid))
        dst.ensure_seed(self.uuid, self.seed)
        dst.ensure_dhcp(self.mac, self.ip, f"lm-plain-{self.uuid[:8]}")
        conn = libvirt.open(source.uri)
        target_conn = libvirt.open(target.uri)
        try:
            xml = conn.lookupByUUIDString(self.uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            pool_path = lx.pool_path_of(target_conn.storagePoolLookupByName(target.storage_pool).XMLDesc(0))
        finally:
            target_conn.close()
            conn.close()
        document = self.scratch / f"plain-{self.uuid}-{target.name}.xml"
        document.write_text(
            lx.retarget_domain(
                xml,
                pool=target.storage_pool,
                network=target.network,
                vnc_listen=target.vnc_listen,
                packet_filter=self.packet_filter,
                console_log=f"{pool_path.rstrip('/')}/{console_log_volume(self.uuid)}" if pool_path else None,
            )
        )
        address = next(ns.address for ns in self.site.spaces if ns.uri == target.uri)
        command = [
            shutil.which("virsh") or "virsh",
            "-q",
            "-c",
            source.uri,
            "migrate",
            "--live",
            "--copy-storage-all",
            "--persistent",
            "--undefinesource",
            "--xml",
            str(document),
            "--persistent-xml",
            str(document),
            self.uuid,
            target.uri,
            f"tcp://{address}",
        ]
        began = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=SETTLE_WITHIN)  # noqa: S603
        elapsed = time.monotonic() - began
        if done.returncode != 0:
            raise RuntimeError(f"virsh migrate exited {done.returncode}: {done.stderr.strip()}")
        # What the source keeps after a move (its volumes, DHCP entry), as the portal's clean-up.
        src.delete(self.uuid, self.mac)
        self.host = target
        return elapsed


def same_filters(site: Site, portal_guest: PortalGuest, prefix: str) -> str | None:
    """The portal guest's packet filters (its own and its groups'), copied under names that
    start with `prefix` onto both hosts; the name of the copy of its own."""
    host = portal_guest.host()
    if not driver_for(host_ref(host)).can_filter():
        return None
    own = firewall.instance_filter_name(Instance.objects.select_related("host").get(pk=portal_guest.id))
    theirs = firewall.host_filters(host)
    renamed = {f.name: f"{prefix}{n}" for n, f in enumerate(theirs)}
    copies = [
        PacketFilter(
            name=renamed[f.name], includes=tuple(renamed.get(name, name) for name in f.includes), rules=f.rules
        )
        for f in theirs
    ]
    for each in site.hosts:
        driver_for(host_ref(each)).ensure_filters(copies)
    return renamed[own]


def leased(site: Site, host: Host, mac: str) -> bool:
    conn = libvirt.open(host.uri)
    try:
        return lease_of(conn.networkLookupByName(host.network), mac) is not None
    finally:
        conn.close()


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    if reason := namespaced.unavailable():
        return [skipped(AREA, f"skipped: {reason}")]
    if reason := build_tiny_image():
        return [skipped(AREA, reason)]
    env.reset_data()
    account = seed.account()
    User.objects.filter(pk=account.user.pk).update(is_staff=True)  # an operator, for /api/v1/admin/
    image, _flavor = tiny_image()
    flavor = seed.flavor(name="bench.lm", vcpus=1, memory_mb=MEMORY_MB, disk_gb=1)
    site = Site(env)
    portal: list[float] = []
    plain: list[float] = []
    try:
        try:
            site.bring_up(image)
        except Unavailable as exc:
            return [skipped(AREA, f"skipped: {exc}")]
        web = processes.start_web(env)
        processes.start_workers(env, [[host.queue] for host in site.hosts])
        portal_guest = PortalGuest(site, web.port, account.headers, image, flavor)
        plain_guest = PlainGuest(site, image, flavor, env.tmp, portal_guest)
        first = site.hosts[0]
        wait_for("the portal's guest's lease", lambda: leased(site, first, portal_guest.mac), every=0.5)
        wait_for("the plain guest's lease", lambda: leased(site, first, plain_guest.mac), every=0.5)
        for n in range(1 if quick else 3):
            portal.append(portal_guest.move())
            plain.append(plain_guest.move())
            print(f"   run {n + 1}: portal {portal[-1]:.1f} s, virsh {plain[-1]:.1f} s", flush=True)
        steps = portal_guest.step_medians_ms()
        print(f"   portal migration steps, median ms: {steps}", flush=True)
        domain_type = first.domain_type
    finally:
        processes.stop_all()
        site.remove()
    value, floor = percentile(portal, 50), percentile(plain, 50)
    return [
        Figure(
            AREA,
            f"tiny guest ({domain_type}, 1 vCPU, {MEMORY_MB} MiB, disk copied): POST -> RUNNING on the target, "
            f"median of {len(portal)}",
            value,
            "s",
            baseline=floor,
            baseline_name="virsh migrate --live --copy-storage-all of the same guest (same filter)",
            target=f"ratio <= {TARGET_RATIO}",
            passed=value / floor <= TARGET_RATIO,
            detail={"portal_s": portal, "virsh_s": plain, "portal_steps_median_ms": steps},
        )
    ]
