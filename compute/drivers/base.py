"""The hypervisor seam. Nothing here knows about the database; it takes and returns dataclasses.

Every `ensure_*` method is idempotent: called again after success (or after a crash half-way)
it finds the work done and returns without creating anything twice.
"""

from __future__ import annotations

import abc
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
        """The instance's qcow2 overlay, backed by the base image, of disk_gb virtual size."""

    @abc.abstractmethod
    def ensure_seed(self, uuid: str, iso: bytes) -> None:
        """The cloud-init NoCloud seed ISO as a volume; replaced if its content changed."""

    @abc.abstractmethod
    def ensure_dhcp(self, mac: str, ip: str, hostname: str) -> None:
        """A DHCP host entry so the guest with this MAC always leases exactly this IP."""

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
    def delete(self, uuid: str, mac: str, ip: str) -> None:
        """Remove domain, disk and seed volumes and the DHCP entry. Whatever is already gone
        is skipped, so a delete that failed half-way can simply run again."""

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
