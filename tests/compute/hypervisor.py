"""Failure injection and inspection over libvirt's test driver, through the real LibvirtDriver.

Nothing here imitates libvirt: the subclasses run the real driver against a test:/// host and
only add a fault (a libvirtError with a chosen code, or a worker that dies) at one chosen call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libvirt

from compute.drivers.libvirt import LibvirtDriver, complete_marker, connect, disk_volume, seed_volume
from compute.drivers.libvirt_xml import dhcp_hosts_of
from compute.models import Host, Instance


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirtError carrying `code`, as libvirt itself raises it (the code lives in `err`)."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_NONE, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


@dataclass
class FaultPlan:
    """Raise `code` from the first `times` calls of the connection's `method`; counts them."""

    method: str
    code: int
    times: int
    raised: int = 0
    calls: int = 0


class FaultyConnection:
    """A libvirt connection that fails as its plan says, and otherwise is the real one."""

    def __init__(self, conn: libvirt.virConnect, plan: FaultPlan):
        self._conn = conn
        self._plan = plan

    def __getattr__(self, name: str):
        real = getattr(self._conn, name)
        if name != self._plan.method:
            return real

        def call(*args, **kwargs):
            plan = self._plan
            plan.calls += 1
            if plan.raised < plan.times:
                plan.raised += 1
                raise libvirt_error(plan.code, f"injected failure {plan.raised} of {name}")
            return real(*args, **kwargs)

        return call


def faulty_driver(plan: FaultPlan) -> type[LibvirtDriver]:
    """The real driver over a connection that fails by `plan` (shared by every instance)."""

    class FaultyDriver(LibvirtDriver):
        def __init__(self, host):
            super().__init__(host)
            self.conn = FaultyConnection(self.conn, plan)

    return FaultyDriver


class WorkerCrash(BaseException):
    """Stands for the worker process dying: no `except Exception` in the code under test sees it."""


def crashing_driver(method: str) -> type[LibvirtDriver]:
    """The real driver, except that the worker 'dies' right after the first `method` call
    completes: its work is done on the host, but nothing after it ran."""
    crashed = []

    def after_real_call(self, *args, **kwargs):
        result = getattr(LibvirtDriver, method)(self, *args, **kwargs)
        if not crashed:
            crashed.append(method)
            raise WorkerCrash(f"worker died right after {method}")
        return result

    return type("CrashingDriver", (LibvirtDriver,), {method: after_real_call})


@dataclass
class Recorded:
    seeds: dict[str, bytes] = field(default_factory=dict)
    dhcp_names: dict[str, str] = field(default_factory=dict)


def recording_driver() -> tuple[type[LibvirtDriver], Recorded]:
    """The real driver, also keeping the seed ISO bytes and DHCP names it was given (the test
    driver stores no volume contents, so this is where a test can read what a guest would)."""
    recorded = Recorded()

    class RecordingDriver(LibvirtDriver):
        def ensure_seed(self, uuid: str, iso: bytes) -> None:
            recorded.seeds[uuid] = iso
            super().ensure_seed(uuid, iso)

        def ensure_dhcp(self, mac: str, ip: str, hostname: str) -> None:
            recorded.dhcp_names[mac] = hostname
            super().ensure_dhcp(mac, ip, hostname)

    return RecordingDriver, recorded


@dataclass(frozen=True)
class Holdings:
    """What a simulated host holds for one instance."""

    domains: list[str]
    volumes: list[str]
    dhcp: list[dict[str, str]]
    base_images: list[str]  # whole ones: each with its completion marker
    active: bool


def holdings(host: Host, instance: Instance) -> Holdings:
    conn = connect(host.uri)
    uuid = str(instance.pk)
    domains = [d.name() for d in conn.listAllDomains(0) if d.UUIDString() == uuid]
    pool = conn.storagePoolLookupByName(host.storage_pool)
    pool.refresh(0)
    names = pool.listVolumes()
    net_xml = conn.networkLookupByName(host.network).XMLDesc(0)
    dhcp = [e for e in dhcp_hosts_of(net_xml) if e.get("mac", "").lower() == instance.mac_address.lower()]
    active = bool(domains) and bool(conn.lookupByUUIDString(uuid).isActive())
    return Holdings(
        domains=domains,
        volumes=sorted(name for name in names if uuid in name),
        dhcp=dhcp,
        base_images=sorted(name for name in names if name.startswith("img-") and complete_marker(name) in names),
        active=active,
    )


def expected_volumes(instance: Instance) -> list[str]:
    return sorted([disk_volume(str(instance.pk)), seed_volume(str(instance.pk))])


def assert_built_once(instance: Instance) -> Instance:
    """Exactly one of each thing the build makes is on the host, and the domain runs."""
    instance.refresh_from_db()
    assert instance.state == "running"
    held = holdings(instance.host, instance)
    assert held.domains == [f"inst-{instance.pk}"]
    assert held.active
    assert held.volumes == expected_volumes(instance)
    assert held.dhcp == [{"mac": instance.mac_address, "ip": instance.ip_address, "name": f"i-{instance.pk.hex}"}]
    assert held.base_images == [instance.image.volume_name]
    return instance
