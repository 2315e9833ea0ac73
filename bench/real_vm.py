"""Item 2: a real guest on qemu:///system, API POST -> DHCP lease vs `virsh create` -> lease.

The guest is the project's tiny image (portal/scripts/build-tiny-image.sh), 1 vCPU and
256 MiB, on a dir pool and an isolated network (no forwarding) made for this run with
compute.localhost and removed at the end with every domain and volume on them.

Portal path, timed from the POST: the API claims and allocates, a real Celery worker runs
the build (disk overlay, seed ISO, DHCP entry, define, start), and the guest boots and asks
for its lease. Plain path, timed from `virsh create`: the same guest (the driver's own XML,
its own overlay and seed volume prepared beforehand, untimed) booted by virsh alone. The base
image is uploaded to the pool once before either runs, as on any host that has run one
instance. Runs alternate, portal first; each guest is destroyed as soon as it has its lease,
so only one boots at a time, and the figures are the medians.
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
from bench.environment import BASE_DIR, BenchEnvironment
from bench.load import request_json
from bench.report import Figure, percentile, skipped
from compute import cloudinit, firewall, localhost
from compute.driver_refs import host_ref, image_ref
from compute.drivers import libvirt_xml as lx
from compute.drivers.libvirt import disk_volume, domain_name, driver_for, seed_volume
from compute.hosts import host_register
from compute.models import Flavor, Host, Image, Instance, InstanceAction, InstanceState, IpPool
from compute.services import mac_for

AREA = "real-vm"
URI = "qemu:///system"
BUILD_SCRIPT = BASE_DIR / "portal" / "scripts" / "build-tiny-image.sh"
TINY_IMAGE = BASE_DIR / "var" / "cache" / "tiny-image" / "tiny.qcow2"
TARGET_RATIO = 1.3
LEASE_WITHIN = 180.0


def unavailable() -> str | None:
    """Why no real guest can boot here, or None."""
    if shutil.which("qemu-system-x86_64") is None:
        return "skipped: qemu-system-x86_64 is not installed"
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as exc:
        return f"skipped: libvirtd cannot be reached at {URI}: {exc.get_error_message()}"
    return None


def lease_of(network: libvirt.virNetwork, mac: str) -> str | None:
    for lease in network.DHCPLeases():
        if lease["mac"].lower() == mac.lower():
            return lease["ipaddr"]
    return None


def wait_lease(network: libvirt.virNetwork, mac: str) -> str:
    deadline = time.monotonic() + LEASE_WITHIN
    while time.monotonic() < deadline:
        if ip := lease_of(network, mac):
            return ip
        time.sleep(0.1)
    raise RuntimeError(f"no DHCP lease for {mac} within {LEASE_WITHIN:.0f} s")


def destroy(conn: libvirt.virConnect, uuid_text: str) -> None:
    try:
        dom = conn.lookupByUUIDString(uuid_text)
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass


def remove_everything(conn: libvirt.virConnect, name: str, pool_dir: Path) -> None:
    """Every domain on the run's network, then the network and the pool with its volumes."""
    for dom in conn.listAllDomains(0):
        try:
            if f"<source network='{name}'" not in dom.XMLDesc(0):
                continue
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError:
            continue
    host = Host.objects.filter(name=name).first()
    if host is not None:
        firewall.remove_host_filters(host)
    localhost.remove(conn, pool=name, network=name)
    shutil.rmtree(pool_dir, ignore_errors=True)


def remove_with_own_connection(name: str, pool_dir: Path) -> None:
    conn = libvirt.open(URI)
    try:
        remove_everything(conn, name, pool_dir)
    finally:
        conn.close()


class Runs:
    def __init__(self, conn, network, host, image, flavor, web_port: int, account: seed.Account, scratch: Path):
        self.conn, self.network, self.host, self.image, self.flavor = conn, network, host, image, flavor
        self.port, self.headers, self.scratch = web_port, account.headers, scratch
        pool = IpPool.objects.get(host=host)
        # The plain guests get fixed addresses from the top of the range; the portal allocates
        # from the bottom, so no address is ever leased to two MACs in one run.
        self.instance_ids: list[str] = []
        self.spare_ips = [str(ipaddress.ip_address(pool.last) - n) for n in range(50)]

    def portal(self) -> tuple[float, float]:
        """(POST -> RUNNING, POST -> lease) in seconds."""
        name = f"vm-{uuid.uuid4().hex[:8]}"
        began = time.monotonic()
        status, body = request_json(
            self.port,
            "POST",
            "/api/v1/instances",
            headers=self.headers,
            body={"name": name, "image": str(self.image.pk), "flavor": str(self.flavor.pk)},
        )
        if status != 202:
            raise RuntimeError(f"POST /api/v1/instances answered {status}: {body}")
        running = None
        while True:
            if running is None:
                state = Instance.objects.filter(pk=body["id"]).values_list("state", flat=True).first()
                if state == InstanceState.RUNNING:
                    running = time.monotonic() - began
                elif state != InstanceState.BUILDING:
                    instance = Instance.objects.get(pk=body["id"])
                    raise RuntimeError(f"instance went {state}: {instance.error_step} {instance.error_message}")
            if lease_of(self.network, body["mac_address"]):
                break
            if time.monotonic() - began > LEASE_WITHIN:
                raise RuntimeError(f"portal guest {body['id']}: no lease within {LEASE_WITHIN:.0f} s")
            time.sleep(0.1)
        leased = time.monotonic() - began
        destroy(self.conn, body["id"])
        self.instance_ids.append(body["id"])
        return running or leased, leased

    def step_medians_ms(self) -> dict[str, float]:
        """Median duration of each build step the worker recorded for the portal guests."""
        durations: dict[str, list[float]] = {}
        steps = InstanceAction.objects.filter(instance_id__in=self.instance_ids, action="create").exclude(step="")
        for step, ms in steps.values_list("step", "duration_ms"):
            durations.setdefault(step, []).append(ms or 0)
        return {step: percentile(values, 50) for step, values in durations.items()}

    def plain(self) -> float:
        """`virsh create` -> lease in seconds, for the same guest prepared beforehand."""
        pk = uuid.uuid4()
        text = str(pk)
        mac = mac_for(pk)
        hostname = cloudinit.hostname_for(f"plain-{text[:8]}", text)
        drv = driver_for(host_ref(self.host))
        drv.ensure_disk(text, image_ref(self.image), self.flavor.disk_gb)
        drv.ensure_seed(text, cloudinit.build_seed(uuid=text, hostname=hostname, ssh_keys=[], user_data=""))
        drv.ensure_dhcp(mac, self.spare_ips.pop(0), hostname)
        xml = lx.domain_xml(
            lx.DomainConfig(
                uuid=text,
                name=domain_name(text),
                domain_type=self.host.domain_type,
                vcpus=self.flavor.vcpus,
                memory_mb=self.flavor.memory_mb,
                pool=self.host.storage_pool,
                disk_volume=disk_volume(text),
                seed_volume=seed_volume(text),
                network=self.host.network,
                mac=mac,
                vnc_listen=self.host.vnc_listen,
                bandwidth_kbytes=self.flavor.bandwidth_mbit * 1000 // 8 if self.host.shaping else None,
            )
        )
        document = self.scratch / f"plain-{text}.xml"
        document.write_text(xml)
        virsh = shutil.which("virsh")
        began = time.monotonic()
        if virsh:
            subprocess.run([virsh, "-q", "-c", URI, "create", str(document)], check=True, capture_output=True)
        else:
            self.conn.createXML(xml, 0)
        wait_lease(self.network, mac)
        leased = time.monotonic() - began
        destroy(self.conn, text)
        return leased


def build_tiny_image() -> str | None:
    """Build (or find cached) the tiny image; why it could not be, or None."""
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(TINY_IMAGE)], capture_output=True, text=True, timeout=900, check=False
    )
    if built.returncode != 0:
        return f"skipped: the tiny image could not be built: {built.stderr.strip()[-300:]}"
    return None


def tiny_image() -> tuple[Image, Flavor]:
    """The tiny image's row (its file linked into the image store) and a flavor of 1 vCPU and
    256 MiB: what the real-guest areas boot."""
    (settings.IMAGE_STORE / "tiny.qcow2").symlink_to(TINY_IMAGE)
    image = Image.objects.create(
        name="Tiny Linux",
        os_family="linux",
        os_version="busybox",
        size_bytes=TINY_IMAGE.stat().st_size,
        source_path="tiny.qcow2",
        min_disk_gb=1,
        min_memory_mb=128,
    )
    return image, seed.flavor(name="bench.vm", vcpus=1, memory_mb=256, disk_gb=1)


def real_host(name: str, pool_dir: Path, bridge: str, image: Image) -> Host:
    """A host on qemu:///system with its own dir pool and isolated network, both called
    `name`, and the image already uploaded to its pool."""
    args = localhost.prepare(URI, pool=name, pool_dir=pool_dir, network=name, bridge=bridge)
    host = host_register(name=name, shaping=localhost.kernel_can_shape(), allow_kvm=settings.ALLOW_KVM, **args)
    driver_for(host_ref(host)).ensure_base_image(image_ref(image))
    return host


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    if reason := unavailable() or build_tiny_image():
        return [skipped(AREA, reason)]
    env.reset_data()
    account = seed.account()
    name = f"bench-{env.run_id}"
    pool_dir = Path("/var/lib/libvirt/images") / f"portal-{name}"
    conn = libvirt.open(URI)
    env.on_cleanup(lambda: remove_with_own_connection(name, pool_dir))
    portal: list[tuple[float, float]] = []
    plain: list[float] = []
    try:
        image, flavor = tiny_image()
        host = real_host(name, pool_dir, f"vbb{env.run_id[:6]}", image)
        web = processes.start_web(env)
        processes.start_workers(env, [[host.queue]])
        runs = Runs(conn, conn.networkLookupByName(name), host, image, flavor, web.port, account, env.tmp)
        for n in range(1 if quick else 3):
            portal.append(runs.portal())
            plain.append(runs.plain())
            print(f"   run {n + 1}: portal {portal[-1][1]:.1f} s, virsh {plain[-1]:.1f} s", flush=True)
        steps = runs.step_medians_ms()
        print(f"   portal build steps, median ms: {steps}", flush=True)
    finally:
        processes.stop_all()
        remove_everything(conn, name, pool_dir)
        conn.close()
    to_lease = percentile([lease for _running, lease in portal], 50)
    to_running = percentile([running for running, _lease in portal], 50)
    floor = percentile(plain, 50)
    kind = f"{host.domain_type}, 1 vCPU, 256 MiB"
    return [
        Figure(
            AREA,
            f"tiny image ({kind}): POST -> DHCP lease, median of {len(portal)}",
            to_lease,
            "s",
            baseline=floor,
            baseline_name="virsh create -> lease",
            target=f"ratio <= {TARGET_RATIO}",
            passed=to_lease / floor <= TARGET_RATIO,
            detail={"portal_s": portal, "virsh_s": plain, "build_steps_median_ms": steps},
        ),
        Figure(AREA, f"tiny image ({kind}): POST -> RUNNING, median of {len(portal)}", to_running, "s"),
    ]
