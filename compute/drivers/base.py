"""The hypervisor seam. Nothing here knows about the database; it takes and returns dataclasses.

Every `ensure_*` method is idempotent: called again after success (or after a crash half-way)
it finds the work done and returns without creating anything twice.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostRef:
    name: str
    uri: str
    storage_pool: str
    network: str
    vnc_listen: str
    shaping: bool
    domain_type: str
    # How long the host's DHCP server keeps a lease; a released address rests this long.
    dhcp_lease_seconds: int = 600


@dataclass(frozen=True)
class HostInfo:
    vcpus: int
    memory_mb: int
    disk_gb: int
    hostname: str
    kvm_available: bool


@dataclass(frozen=True)
class ImageRef:
    volume: str
    format: str
    size_bytes: int
    source_path: str  # empty for images that already live on the host (snapshots)


@dataclass(frozen=True)
class DomainSpec:
    uuid: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    mac: str
    bandwidth_kbytes: int | None  # None: no shaping on this host
    with_seed: bool = True
    # The volume of an install ISO to attach as a CD-ROM, booted before the disk.
    iso_volume: str | None = None
    # Boot the rescue disk (ensure_rescue_disk), with the instance's own disk second.
    rescue: bool = False
    # The guest's address: the interface's packet filter lets it send from this one only.
    ip: str | None = None
    # The interface's packet filter (ensure_filters), where the host can filter.
    packet_filter: str | None = None


@dataclass(frozen=True)
class PacketRule:
    """One rule of a packet filter, from the guest's side: "in" is traffic to the guest, "out"
    traffic from it. `peer` is the other end (a CIDR); ports are the packet's own (in: the
    destination port is the guest's; out: the peer's)."""

    action: str  # accept | drop
    direction: str  # in | out | inout
    protocol: str  # tcp | udp | icmp | all
    priority: int  # lower first, -1000..1000
    peer: str | None = None
    dst_ports: tuple[int, int] | None = None
    src_ports: tuple[int, int] | None = None
    # False for traffic connection tracking cannot pair (DHCP's broadcast replies).
    stateful: bool = True
    # Only packets that open a connection: a drop of new connections to the host that still
    # lets the guest answer the host (SSH from it, a probe's reply).
    new_only: bool = False


@dataclass(frozen=True)
class PacketFilter:
    """A named filter: other filters it includes, then its own rules."""

    name: str
    includes: tuple[str, ...] = ()
    rules: tuple[PacketRule, ...] = ()


@dataclass(frozen=True)
class DomainStatus:
    uuid: str
    power: str  # running, shutoff, paused, crashed, nostate, missing
    vnc_port: int | None = None


@dataclass(frozen=True)
class DomainStats:
    uuid: str
    power: str
    cpu_time_ns: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    disk_allocation_bytes: int = 0
    # For a guest that is not running: "guest" when it powered itself off, "host" otherwise
    # (destroyed on the host, QEMU crashed, the host rebooted).
    stopped_by: str = ""
    extra: dict = field(default_factory=dict)


# An image volume is whole once an empty volume of its name plus this suffix sits beside it.
COMPLETE_SUFFIX = ".complete"


class TransientHostError(Exception):
    """The host could not be reached or answered 'try later'; retrying may succeed."""


class HostError(Exception):
    """The host refused the operation; retrying the same call will not help."""


class GuestAgentUnavailable(HostError):
    """The guest has no agent answering (none installed or running, or the guest is not up):
    what needs one, such as a password reset, cannot be done in this guest now."""


class ComputeDriver(abc.ABC):
    def __init__(self, host: HostRef):
        self.host = host

    @abc.abstractmethod
    def host_info(self) -> HostInfo:
        """Size of the host and of its storage pool, for capacity and heartbeat."""

    @abc.abstractmethod
    def ensure_base_image(self, image: ImageRef) -> None:
        """The image is a volume in the host's pool; uploaded once, then reused by every disk."""

    @abc.abstractmethod
    def ensure_disk(self, uuid: str, image: ImageRef, disk_gb: int) -> None:
        """The instance's qcow2 overlay, backed by the base image, of disk_gb virtual size.
        For an install ISO (format "iso") an empty qcow2 disk instead: the ISO installs onto it."""

    @abc.abstractmethod
    def ensure_rescue_disk(self, uuid: str, image: ImageRef, disk_gb: int) -> None:
        """A qcow2 overlay of the rescue image, for the instance to boot while rescued. The base
        image must be in the pool (ensure_base_image). Kept if it exists."""

    @abc.abstractmethod
    def delete_rescue_disk(self, uuid: str) -> None:
        """Remove the rescue disk (after unrescue, or with the instance). Missing is fine."""

    @abc.abstractmethod
    def eject_cdrom(self, uuid: str) -> None:
        """Eject the CD of a running domain at once, even one the guest locked; the persistent
        definition is the caller's (ensure_defined without the ISO). Not running: a no-op."""

    @abc.abstractmethod
    def console_log(self, uuid: str, max_bytes: int) -> bytes:
        """The last `max_bytes` the guest printed on its serial console (across its boots), read
        through libvirt from the log file on the host; empty when it printed nothing yet."""

    @abc.abstractmethod
    def set_user_password(self, uuid: str, user: str, password_hash: str) -> None:
        """Set the guest user's password, given as a crypt(3) hash, through the guest agent of
        the running domain. GuestAgentUnavailable when no agent answers or it refuses."""

    @abc.abstractmethod
    def ensure_seed(self, uuid: str, iso: bytes) -> None:
        """The cloud-init NoCloud seed ISO as a volume; replaced if its content changed."""

    @abc.abstractmethod
    def ensure_dhcp(self, mac: str, ip: str, hostname: str) -> None:
        """A DHCP host entry so the guest with this MAC always leases exactly this IP."""

    @abc.abstractmethod
    def ensure_dns(self, ip: str, names: tuple[str, ...]) -> None:
        """The host network's DNS server answers `names` with `ip` (and nothing else for `ip`);
        with no names, the address's record is removed."""

    @abc.abstractmethod
    def can_filter(self) -> bool:
        """Whether the host filters packets (libvirt's nwfilter); libvirt's test driver cannot."""

    @abc.abstractmethod
    def ensure_filters(self, filters: list[PacketFilter]) -> None:
        """Each filter is defined with exactly this content. A running guest whose interface
        uses one gets the change at once, without a restart. A no-op where the host cannot filter."""

    @abc.abstractmethod
    def remove_filters(self, names: Iterable[str]) -> list[str]:
        """Undefine these filters, by name, where no interface or other filter uses them any
        more; the names that are gone (missing ones included). Never lists the host's filters:
        libvirt 9.0 can deadlock listing them while a guest starts."""

    @abc.abstractmethod
    def export_disk(self, uuid: str) -> tuple[int, int]:
        """A standalone copy of the stopped instance's disk (its overlay flattened onto its
        image), kept on this host until delete_export; its (virtual capacity, file length) in
        bytes. An export already complete is kept."""

    @abc.abstractmethod
    def read_export(self, uuid: str) -> Iterator[bytes]:
        """The export's file, chunk by chunk, streamed from the host through libvirt."""

    @abc.abstractmethod
    def delete_export(self, uuid: str) -> None:
        """Remove the export. Missing is fine."""

    @abc.abstractmethod
    def import_disk(self, uuid: str, length: int, chunks: Iterable[bytes]) -> None:
        """The instance's disk, written from an export's bytes (`length` of them) streamed into
        this host's pool, and marked complete; kept if complete already, made again if not."""

    @abc.abstractmethod
    def prepare_disk(self, uuid: str, capacity_bytes: int) -> None:
        """An empty qcow2 disk of this virtual size for a live migration to copy into; one
        that exists (a live migration already under way or done) is kept."""

    @abc.abstractmethod
    def disk_capacity(self, uuid: str) -> int:
        """The virtual size of the instance's disk, in bytes."""

    @abc.abstractmethod
    def migrate_live(
        self,
        uuid: str,
        target: ComputeDriver,
        spec: DomainSpec,
        *,
        copy_storage: bool = True,
        trust_shared: bool = False,
    ) -> DomainStatus:
        """Move the running domain to `target` without stopping it, its disks copied on the way
        (no shared storage needed) unless `copy_storage` is False (both see the disk on shared
        storage; `trust_shared`: even where libvirt cannot tell that the storage is shared),
        defined there as `spec` says and gone from here; its status there. Done already
        (running there, gone here): the same answer. When it fails, the guest runs on here as
        before (libvirt's guarantee)."""

    @abc.abstractmethod
    def has_disk(self, uuid: str) -> bool:
        """Whether the instance's disk is in the pool, as the storage shows it now (a shared
        pool: another host may have written it)."""

    @abc.abstractmethod
    def ensure_defined(self, spec: DomainSpec) -> None:
        """The persistent domain exists with this spec (redefined if the size changed)."""

    @abc.abstractmethod
    def start(self, uuid: str) -> DomainStatus:
        """The domain is running. Starting a running domain is a no-op."""

    @abc.abstractmethod
    def stop(self, uuid: str, timeout: float) -> DomainStatus:
        """Graceful ACPI shutdown; after `timeout` seconds a hard power-off. Idempotent."""

    @abc.abstractmethod
    def reboot(self, uuid: str) -> DomainStatus:
        """Graceful reboot of a running domain."""

    @abc.abstractmethod
    def grow_disk(self, uuid: str, disk_gb: int) -> None:
        """Grow the stopped instance's disk to disk_gb; never shrinks."""

    @abc.abstractmethod
    def delete_disk(self, uuid: str) -> None:
        """Remove the instance's disk volume (for rebuild). Missing is fine."""

    @abc.abstractmethod
    def snapshot(self, uuid: str, image: ImageRef) -> int:
        """Copy the stopped instance's disk, flattened, into a new image volume; its size."""

    @abc.abstractmethod
    def delete(self, uuid: str, mac: str) -> None:
        """Remove domain, disk and seed volumes and the DHCP entry. Whatever is already gone
        is skipped, so a delete that failed half-way can simply run again."""

    @abc.abstractmethod
    def forget(self, uuid: str, mac: str) -> None:
        """Remove the domain (destroyed first if it runs) and the DHCP entry, but no volume:
        the disk on shared storage belongs to the copy that runs on another host now."""

    @abc.abstractmethod
    def delete_image(self, image: ImageRef) -> None:
        """Remove an image volume from the host's pool. Missing is fine."""

    @abc.abstractmethod
    def status(self, uuid: str) -> DomainStatus:
        """Power state and VNC port; power 'missing' when no such domain exists."""

    @abc.abstractmethod
    def all_stats(self) -> list[DomainStats]:
        """Counters of every domain of the portal on the host, in one hypervisor call."""

    @abc.abstractmethod
    def set_bandwidth(self, uuid: str, mac: str, kbytes: int | None) -> dict:
        """Live-limit the interface (KiB/s both ways; None lifts it); the live parameters."""

    @abc.abstractmethod
    def network_info(self) -> NetworkInfo:
        """Subnet, gateway and DHCP range of the host's network, to seed its IP pool."""

    @abc.abstractmethod
    def inventory(self) -> dict[str, list[str]]:
        """Names of the portal's domains and volumes on the host, for the orphan report."""


@dataclass(frozen=True)
class NetworkInfo:
    cidr: str
    gateway: str
    first: str
    last: str
