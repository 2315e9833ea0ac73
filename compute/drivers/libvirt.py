"""The libvirt driver: the same code for test:///, qemu:///system and remote URIs.

libvirt's test driver (test:///default, or test:///path/host.xml) keeps no file contents: it
reports volume upload, download and resize as unsupported, and has no device hot-plug (a CD
eject). Those calls are skipped on it and only on it (`_content_free`); every other call is
the real one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import libvirt

from compute.drivers import libvirt_xml as lx
from compute.drivers.base import (
    COMPLETE_SUFFIX,
    ComputeDriver,
    DomainSpec,
    DomainStats,
    DomainStatus,
    GuestAgentUnavailable,
    HostError,
    HostInfo,
    HostRef,
    ImageRef,
    NetworkInfo,
    PacketFilter,
    TransientHostError,
)

GIB = 1024**3
UPLOAD_CHUNK = 1024 * 1024
POWER = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",  # still shutting down
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}
TRANSIENT_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
}
CONNECTION_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_SYSTEM_ERROR}
MISSING_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
}

# libvirt prints every error to stderr by default; they are raised as exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_connections: dict[str, libvirt.virConnect] = {}
_connections_lock = threading.Lock()


def connect(uri: str) -> libvirt.virConnect:
    """One connection per URI per process, reopened when it died.

    Kept open on purpose: a test:///path.xml URI gives every new connection fresh state, so
    the simulated host lives exactly as long as this cached connection.
    """
    with _connections_lock:
        conn = _connections.get(uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise TransientHostError(f"cannot connect to {uri}: {exc}") from exc
        _connections[uri] = conn
        return conn


def forget_connection(uri: str) -> None:
    with _connections_lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _code(exc: libvirt.libvirtError) -> int:
    return exc.get_error_code()


def power_off(dom: libvirt.virDomain) -> None:
    """Hard power-off of a domain found running. A guest can finish shutting itself down
    between that look and this call (a stop's ACPI request arriving just as it gives up
    waiting): libvirt then refuses with "domain is not running", and the guest is off, as
    wanted."""
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID or dom.isActive():
            raise


def _stopped_by(stats: dict) -> str:
    """Who stopped a guest that is not running, from libvirt's reason for its state."""
    state, reason = stats.get("state.state", 0), stats.get("state.reason", 0)
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN:
        return "guest"
    return "host"


def disk_volume(uuid: str) -> str:
    return f"inst-{uuid}-disk.qcow2"


def seed_volume(uuid: str) -> str:
    return f"inst-{uuid}-seed.iso"


def rescue_volume(uuid: str) -> str:
    return f"inst-{uuid}-rescue.qcow2"


def export_volume(uuid: str) -> str:
    """A migration's flattened copy of the instance's disk, on the host it leaves."""
    return f"inst-{uuid}-export.qcow2"


def console_log_volume(uuid: str) -> str:
    """The serial console's log file, in the pool's directory: libvirt reads it back as a volume
    (also over a remote URI), and deleting the instance removes it like its disks."""
    return f"inst-{uuid}-console.log"


def complete_marker(volume: str) -> str:
    """An empty volume made once an image volume is fully written (upload or snapshot copy):
    a volume without it was cut short and is made again."""
    return volume + COMPLETE_SUFFIX


def domain_name(uuid: str) -> str:
    return f"inst-{uuid}"


class LibvirtDriver(ComputeDriver):
    def __init__(self, host: HostRef):
        super().__init__(host)
        self.conn = connect(host.uri)

    # -- helpers ---------------------------------------------------------------------------

    @contextmanager
    def _translated(self, what: str):
        """libvirt errors as the seam's two kinds. A connection that died under the call
        (libvirtd restarted: "client socket is closed", whatever code it carries) is
        transient, and is opened afresh on the next call."""
        try:
            yield
        except libvirt.libvirtError as exc:
            message = f"{what}: {exc.get_error_message() or exc}"
            if exc.get_error_code() in TRANSIENT_CODES:
                # After libvirtd restarts, the first call fails with a system error ("End of
                # file while reading data") while isAlive() still says yes: reconnect next time.
                # A test:/// connection is the simulated host itself, so it is kept.
                if exc.get_error_code() in CONNECTION_CODES and not self.host.uri.startswith("test:"):
                    forget_connection(self.host.uri)
                raise TransientHostError(message) from exc
            if not _alive(self.conn):
                forget_connection(self.host.uri)
                raise TransientHostError(f"{message} (the connection to the host was lost)") from exc
            raise HostError(message) from exc

    @property
    def _content_free(self) -> bool:
        return self.conn.getType() == "TEST"

    def _pool(self) -> libvirt.virStoragePool:
        with self._translated(f"storage pool {self.host.storage_pool}"):
            pool = self.conn.storagePoolLookupByName(self.host.storage_pool)
            if not pool.isActive():
                pool.create()
            return pool

    def _volume(self, name: str) -> libvirt.virStorageVol | None:
        try:
            return self._pool().storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if _code(exc) in MISSING_CODES:
                return None
            raise

    def _domain(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if _code(exc) in MISSING_CODES:
                return None
            raise

    @staticmethod
    def _refresh(pool: libvirt.virStoragePool) -> None:
        """Let the pool see files made outside libvirt's storage API (virtlogd's console logs).
        libvirt refuses while a volume is being copied into the pool (a snapshot): then the
        volumes known so far have to do."""
        try:
            pool.refresh(0)
        except libvirt.libvirtError as exc:
            if "asynchronous jobs" not in (exc.get_error_message() or ""):
                raise

    def _is_complete(self, volume: str) -> bool:
        return self._volume(complete_marker(volume)) is not None

    def _upload(self, vol: libvirt.virStorageVol, read_chunk, length: int) -> None:
        if self._content_free:
            return
        stream = self.conn.newStream(0)
        vol.upload(stream, 0, length, 0)
        try:
            while chunk := read_chunk(UPLOAD_CHUNK):
                sent = 0
                while sent < len(chunk):
                    sent += stream.send(chunk[sent:])
            stream.finish()
        except BaseException:
            stream.abort()
            raise

    def _status_of(self, dom: libvirt.virDomain) -> DomainStatus:
        state, _reason = dom.state()
        power = POWER.get(state, "nostate")
        port = lx.vnc_port_of(dom.XMLDesc(0)) if power == "running" else None
        return DomainStatus(dom.UUIDString(), power, port)

    # -- the contract ----------------------------------------------------------------------

    def host_info(self) -> HostInfo:
        with self._translated("host info"):
            _model, memory_mb, cpus, *_rest = self.conn.getInfo()
            pool = self._pool()
            _state, capacity, _alloc, _avail = pool.info()
            # Instance disks are claimed at their full size by the scheduler; everything else
            # in the pool (base images, snapshots, seeds) takes room they cannot have.
            pool.refresh(0)
            others = sum(vol.info()[2] for vol in pool.listAllVolumes(0) if not vol.name().endswith("-disk.qcow2"))
            capacity = max(capacity - others, 0)
            try:
                self.conn.getDomainCapabilities(None, None, None, "kvm", 0)
                kvm = True
            except libvirt.libvirtError:
                kvm = False
            return HostInfo(cpus, memory_mb, capacity // GIB, self.conn.getHostname(), kvm)

    def ensure_base_image(self, image: ImageRef) -> None:
        with self._translated(f"base image {image.volume}"):
            base = self._volume(image.volume)
            if base is not None and self._is_complete(image.volume):
                return
            if base is not None and not image.source_path:
                return  # made here by a snapshot before markers existed: nothing to redo it from
            if not image.source_path:
                raise HostError(f"image volume {image.volume} is missing and has no source to upload")
            if base is not None:
                # No marker: an upload that never finished (its worker was killed). The caller
                # holds the host's image lock, so nobody else is writing it.
                base.delete(0)
            pool = self._pool()
            # Declared raw so libvirt writes no header of its own; the bytes uploaded are the
            # image file as it is, and disks name its real format as their backing format.
            vol = pool.createXML(lx.volume_xml(image.volume, image.size_bytes, "raw"), 0)
            try:
                with open(image.source_path, "rb") as fh:
                    self._upload(vol, fh.read, image.size_bytes)
            except BaseException:
                vol.delete(0)  # a half-written base image must never be reused
                raise
            pool.createXML(lx.volume_xml(complete_marker(image.volume), 0, "raw"), 0)

    def ensure_disk(self, uuid: str, image: ImageRef, disk_gb: int) -> None:
        with self._translated(f"disk of {uuid}"):
            if self._volume(disk_volume(uuid)) is not None:
                return
            if image.format == "iso":
                # Installed from a CD: an empty disk for the installer to write.
                self._pool().createXML(lx.volume_xml(disk_volume(uuid), disk_gb * GIB, "qcow2"), 0)
                return
            base = self._volume(image.volume)
            if base is None:
                raise HostError(f"base image volume {image.volume} is missing")
            xml = lx.volume_xml(disk_volume(uuid), disk_gb * GIB, "qcow2", base.path(), image.format)
            self._pool().createXML(xml, 0)

    def ensure_rescue_disk(self, uuid: str, image: ImageRef, disk_gb: int) -> None:
        with self._translated(f"rescue disk of {uuid}"):
            if self._volume(rescue_volume(uuid)) is not None:
                return
            base = self._volume(image.volume)
            if base is None:
                raise HostError(f"rescue image volume {image.volume} is missing")
            xml = lx.volume_xml(rescue_volume(uuid), disk_gb * GIB, "qcow2", base.path(), image.format)
            self._pool().createXML(xml, 0)

    def delete_rescue_disk(self, uuid: str) -> None:
        with self._translated(f"delete rescue disk of {uuid}"):
            vol = self._volume(rescue_volume(uuid))
            if vol is not None:
                vol.delete(0)

    def eject_cdrom(self, uuid: str) -> None:
        with self._translated(f"eject the CD of {uuid}"):
            dom = self._domain(uuid)
            if dom is None or not dom.isActive() or self._content_free:
                return
            # FORCE: an installer may have locked the tray; the customer asked for it out.
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
            dom.updateDeviceFlags(lx.cdrom_xml(), flags)

    def console_log(self, uuid: str, max_bytes: int) -> bytes:
        with self._translated(f"console log of {uuid}"):
            if self._content_free:
                return b""
            vol = self._volume(console_log_volume(uuid))
            if vol is None:
                self._refresh(self._pool())  # virtlogd made the file behind the storage driver's back
                vol = self._volume(console_log_volume(uuid))
            if vol is None:
                return b""
            size = vol.info()[1]  # read afresh from the file by the dir pool's backend
            offset = max(size - max_bytes, 0)
            if size <= offset:
                return b""
            stream = self.conn.newStream(0)
            vol.download(stream, offset, size - offset, 0)
            chunks = []
            try:
                while chunk := stream.recv(UPLOAD_CHUNK):
                    chunks.append(chunk)
                stream.finish()
            except BaseException:
                stream.abort()
                raise
            return b"".join(chunks)

    def set_user_password(self, uuid: str, user: str, password_hash: str) -> None:
        with self._translated(f"password of {uuid}"):
            dom = self._domain(uuid)
            if dom is None or not dom.isActive():
                raise GuestAgentUnavailable("the instance is not running")
            try:
                dom.setUserPassword(user, password_hash, libvirt.VIR_DOMAIN_PASSWORD_ENCRYPTED)
            except libvirt.libvirtError as exc:
                if _code(exc) in CONNECTION_CODES and not _alive(self.conn):
                    raise  # the host, not the guest: transient
                # No agent configured or connected, an agent that does not answer or refuses
                # (no such user): all mean the same to the customer, the guest cannot do it.
                raise GuestAgentUnavailable(exc.get_error_message() or str(exc)) from None

    def ensure_seed(self, uuid: str, iso: bytes) -> None:
        with self._translated(f"seed of {uuid}"):
            existing = self._volume(seed_volume(uuid))
            if existing is not None:
                existing.delete(0)  # the seed is cheap; rewriting it keeps it current
            vol = self._pool().createXML(lx.volume_xml(seed_volume(uuid), len(iso), "raw"), 0)
            view = memoryview(iso)
            position = 0

            def read(n: int) -> bytes:
                nonlocal position
                chunk = bytes(view[position : position + n])
                position += len(chunk)
                return chunk

            self._upload(vol, read, len(iso))

    def ensure_dhcp(self, mac: str, ip: str, hostname: str) -> None:
        with self._translated(f"dhcp entry {mac}"):
            net = self.conn.networkLookupByName(self.host.network)
            for entry in lx.dhcp_hosts_of(net.XMLDesc(0)):
                same_mac = entry.get("mac", "").lower() == mac.lower()
                same_ip = entry.get("ip") == ip
                if same_mac and same_ip:
                    return
                if same_mac or same_ip:
                    # An entry left by an instance whose delete never finished holds this
                    # address (or this MAC): the address is ours now, so it is replaced.
                    self._dhcp_update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, entry["mac"], entry["ip"], "")
            self._dhcp_update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, mac, ip, hostname)

    def _dhcp_update(self, net, command: int, mac: str, ip: str, hostname: str) -> None:
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if net.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        lease = self.host.dhcp_lease_seconds if command != libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE else None
        xml = lx.dhcp_host_xml(mac, ip, hostname or None, lease)
        net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)

    def ensure_dns(self, ip: str, names: tuple[str, ...]) -> None:
        with self._translated(f"dns record {ip}"):
            net = self.conn.networkLookupByName(self.host.network)
            current = lx.dns_hosts_of(net.XMLDesc(0)).get(ip)
            if current == list(names):
                return
            flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
            if net.isActive():
                flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
            if current is not None:
                net.update(
                    libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                    libvirt.VIR_NETWORK_SECTION_DNS_HOST,
                    -1,
                    lx.dns_host_xml(ip, tuple(current)),
                    flags,
                )
            if names:
                net.update(
                    libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                    libvirt.VIR_NETWORK_SECTION_DNS_HOST,
                    -1,
                    lx.dns_host_xml(ip, names),
                    flags,
                )

    def can_filter(self) -> bool:
        # libvirt's test driver has no nwfilter driver at all.
        return not self._content_free

    def ensure_filters(self, filters: list[PacketFilter]) -> None:
        if not self.can_filter():
            return
        for spec in filters:
            with self._translated(f"packet filter {spec.name}"):
                uuid = None
                try:
                    existing = self.conn.nwfilterLookupByName(spec.name)
                    uuid = existing.UUIDString()
                except libvirt.libvirtError as exc:
                    if _code(exc) != libvirt.VIR_ERR_NO_NWFILTER:
                        raise
                # Redefining a filter re-instantiates it on every interface that uses it, live;
                # an unchanged definition changes nothing.
                self.conn.nwfilterDefineXML(lx.nwfilter_xml(spec, uuid))

    def remove_filters(self, names: Iterable[str]) -> list[str]:
        if not self.can_filter():
            return list(names)
        gone = []
        with self._translated("packet filters"):
            for name in names:
                try:
                    self.conn.nwfilterLookupByName(name).undefine()
                except libvirt.libvirtError as exc:
                    if _code(exc) == libvirt.VIR_ERR_NO_NWFILTER:
                        gone.append(name)
                    elif _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                    # In use (an interface or a filter still refers to it): the next sync.
                    continue
                gone.append(name)
        return gone

    def export_disk(self, uuid: str) -> tuple[int, int]:
        name = export_volume(uuid)
        with self._translated(f"export the disk of {uuid}"):
            existing = self._volume(name)
            if existing is not None:
                if self._is_complete(name):
                    return existing.info()[1], self._length(existing)
                existing.delete(0)  # a copy cut short
            source = self._volume(disk_volume(uuid))
            if source is None:
                raise HostError(f"disk of {uuid} is missing")
            capacity = source.info()[1]
            pool = self._pool()
            # qemu-img convert through createXMLFrom: the overlay and its image become one file,
            # which needs nothing on the other host but itself.
            vol = pool.createXMLFrom(lx.volume_xml(name, capacity, "qcow2"), source, 0)
            pool.createXML(lx.volume_xml(complete_marker(name), 0, "raw"), 0)
            return capacity, self._length(vol)

    def _length(self, vol: libvirt.virStorageVol) -> int:
        """The volume's file length (what a download sends), not its virtual capacity."""
        if self._content_free:
            return 0
        return vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]

    def read_export(self, uuid: str) -> Iterator[bytes]:
        if self._content_free:
            return
        with self._translated(f"read the export of {uuid}"):
            vol = self._volume(export_volume(uuid))
            if vol is None:
                raise HostError(f"the export of {uuid} is missing")
            stream = self.conn.newStream(0)
            vol.download(stream, 0, 0, 0)
            try:
                while chunk := stream.recv(UPLOAD_CHUNK):
                    if isinstance(chunk, int):  # -2: would block, only on non-blocking streams
                        raise HostError(f"the export of {uuid} stalled")
                    yield chunk
                stream.finish()
            except BaseException:
                stream.abort()
                raise

    def delete_export(self, uuid: str) -> None:
        with self._translated(f"delete the export of {uuid}"):
            for name in (complete_marker(export_volume(uuid)), export_volume(uuid)):
                vol = self._volume(name)
                if vol is not None:
                    vol.delete(0)

    def import_disk(self, uuid: str, length: int, chunks: Iterable[bytes]) -> None:
        name = disk_volume(uuid)
        with self._translated(f"import the disk of {uuid}"):
            existing = self._volume(name)
            if existing is not None:
                if self._is_complete(name):
                    return
                existing.delete(0)  # an import cut short
            pool = self._pool()
            # Declared raw, as base images are: the bytes are the qcow2 file as it is.
            vol = pool.createXML(lx.volume_xml(name, max(length, 1), "raw"), 0)
            iterator = iter(chunks)
            pending = bytearray()

            def read_chunk(size: int) -> bytes:
                while len(pending) < size:
                    chunk = next(iterator, None)
                    if chunk is None:
                        break
                    pending.extend(chunk)
                piece = bytes(pending[:size])
                del pending[:size]
                return piece

            try:
                self._upload(vol, read_chunk, length)
            except BaseException:
                vol.delete(0)
                raise
            pool.createXML(lx.volume_xml(complete_marker(name), 0, "raw"), 0)

    def prepare_disk(self, uuid: str, capacity_bytes: int) -> None:
        with self._translated(f"prepare the disk of {uuid}"):
            if self._volume(disk_volume(uuid)) is None:
                self._pool().createXML(lx.volume_xml(disk_volume(uuid), capacity_bytes, "qcow2"), 0)

    def disk_capacity(self, uuid: str) -> int:
        with self._translated(f"disk of {uuid}"):
            vol = self._volume(disk_volume(uuid))
            if vol is None:
                raise HostError(f"disk of {uuid} is missing")
            return vol.info()[1]

    def _console_log_path(self, uuid: str) -> str | None:
        pool_path = lx.pool_path_of(self._pool().XMLDesc(0))
        return f"{pool_path.rstrip('/')}/{console_log_volume(uuid)}" if pool_path else None

    def migrate_live(
        self,
        uuid: str,
        target: ComputeDriver,
        spec: DomainSpec,
        *,
        copy_storage: bool = True,
        trust_shared: bool = False,
    ) -> DomainStatus:
        assert isinstance(target, LibvirtDriver)
        with self._translated(f"live migration of {uuid}"):
            dom = self._domain(uuid)
            there = target._domain(uuid)
            if dom is None and there is not None and there.isActive():
                return target._status_of(there)  # done before (a redelivered task)
            if dom is None or not dom.isActive():
                raise HostError(f"domain {uuid} is not running here")
            address = urlsplit(target.host.uri).hostname
            if not address or target.host.uri.startswith("test:"):
                raise HostError(f"host {target.host.name} has no address to migrate to")
            if self._content_free:
                raise HostError("libvirt's test driver cannot migrate")
            with target._translated(f"storage pool {target.host.storage_pool}"):
                console_log = target._console_log_path(uuid)
            xml = lx.retarget_domain(
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE),
                pool=target.host.storage_pool,
                network=target.host.network,
                vnc_listen=target.host.vnc_listen,
                packet_filter=spec.packet_filter if target.can_filter() else None,
                console_log=console_log,
            )
            params = {
                libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}",
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml,
                libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: xml,
            }
            # The disks are copied while the guest runs (no shared storage); the definition
            # moves with it, and the source's goes once the guest runs there. On shared storage
            # nothing is copied (libvirt refuses that as unsafe unless the pool is on a shared
            # or cluster filesystem, or the disks' cache is none).
            flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            if copy_storage:
                flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            elif trust_shared:
                flags |= libvirt.VIR_MIGRATE_UNSAFE
            moved = dom.migrate3(target.conn, params, flags)
            return target._status_of(moved)

    def ensure_defined(self, spec: DomainSpec) -> None:
        with self._translated(f"storage pool {self.host.storage_pool}"):
            pool_path = lx.pool_path_of(self._pool().XMLDesc(0))
        cfg = lx.DomainConfig(
            uuid=spec.uuid,
            name=domain_name(spec.uuid),
            domain_type=self.host.domain_type,
            vcpus=spec.vcpus,
            memory_mb=spec.memory_mb,
            pool=self.host.storage_pool,
            disk_volume=disk_volume(spec.uuid),
            seed_volume=seed_volume(spec.uuid) if spec.with_seed else None,
            network=self.host.network,
            mac=spec.mac,
            vnc_listen=self.host.vnc_listen,
            bandwidth_kbytes=spec.bandwidth_kbytes if self.host.shaping else None,
            packet_filter=spec.packet_filter if self.can_filter() else None,
            ip=spec.ip,
            iso_volume=spec.iso_volume,
            rescue_volume=rescue_volume(spec.uuid) if spec.rescue else None,
            console_log=f"{pool_path.rstrip('/')}/{console_log_volume(spec.uuid)}" if pool_path else None,
        )
        with self._translated(f"define {spec.uuid}"):
            # Defining again with the same UUID and name replaces the persistent config, so
            # this is both create and update.
            self.conn.defineXML(lx.domain_xml(cfg))

    def start(self, uuid: str) -> DomainStatus:
        with self._translated(f"start {uuid}"):
            dom = self._domain(uuid)
            if dom is None:
                raise HostError(f"domain {uuid} is not defined")
            if not dom.isActive():
                dom.create()
            return self._status_of(dom)

    def stop(self, uuid: str, timeout: float) -> DomainStatus:
        with self._translated(f"stop {uuid}"):
            dom = self._domain(uuid)
            if dom is None:
                return DomainStatus(uuid, "missing")
            if dom.isActive():
                try:
                    dom.shutdown()
                except libvirt.libvirtError as exc:
                    if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                deadline = time.monotonic() + timeout
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(0.5)
                if dom.isActive():
                    power_off(dom)  # the guest ignored ACPI, or has not finished yet
            return self._status_of(dom)

    def reboot(self, uuid: str) -> DomainStatus:
        with self._translated(f"reboot {uuid}"):
            dom = self._domain(uuid)
            if dom is None:
                raise HostError(f"domain {uuid} is not defined")
            if dom.isActive():
                dom.reboot(0)
            else:
                dom.create()
            return self._status_of(dom)

    def grow_disk(self, uuid: str, disk_gb: int) -> None:
        with self._translated(f"grow disk of {uuid}"):
            vol = self._volume(disk_volume(uuid))
            if vol is None:
                raise HostError(f"disk of {uuid} is missing")
            _type, capacity, _alloc = vol.info()
            if capacity < disk_gb * GIB and not self._content_free:
                vol.resize(disk_gb * GIB, 0)

    def delete_disk(self, uuid: str) -> None:
        with self._translated(f"delete disk of {uuid}"):
            for name in (complete_marker(disk_volume(uuid)), disk_volume(uuid)):
                vol = self._volume(name)
                if vol is not None:
                    vol.delete(0)

    def snapshot(self, uuid: str, image: ImageRef) -> int:
        with self._translated(f"snapshot {uuid}"):
            existing = self._volume(image.volume)
            if existing is not None:
                if self._is_complete(image.volume):
                    return existing.info()[1]
                existing.delete(0)  # a copy cut short
            source = self._volume(disk_volume(uuid))
            if source is None:
                raise HostError(f"disk of {uuid} is missing")
            capacity = source.info()[1]
            pool = self._pool()
            # createXMLFrom copies through qemu-img convert, which flattens the overlay.
            vol = pool.createXMLFrom(lx.volume_xml(image.volume, capacity, "qcow2"), source, 0)
            pool.createXML(lx.volume_xml(complete_marker(image.volume), 0, "raw"), 0)
            return vol.info()[1]

    def has_disk(self, uuid: str) -> bool:
        with self._translated(f"disk of {uuid}"):
            self._refresh(self._pool())
            return self._volume(disk_volume(uuid)) is not None

    def forget(self, uuid: str, mac: str) -> None:
        with self._translated(f"forget {uuid}"):
            dom = self._domain(uuid)
            if dom is not None:
                if dom.isActive():
                    power_off(dom)
                dom.undefine()  # BIOS guests without NVRAM or managed save: no flags needed
            net = self.conn.networkLookupByName(self.host.network)
            for entry in lx.dhcp_hosts_of(net.XMLDesc(0)):
                if entry.get("mac", "").lower() == mac.lower():
                    self._dhcp_update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, entry["mac"], entry["ip"], "")
                    self.ensure_dns(entry["ip"], ())

    def delete(self, uuid: str, mac: str) -> None:
        with self._translated(f"delete {uuid}"):
            self.forget(uuid, mac)
            disk = disk_volume(uuid)
            names = (disk, complete_marker(disk), seed_volume(uuid), rescue_volume(uuid))
            names += (export_volume(uuid), complete_marker(export_volume(uuid)))
            for name in names:
                vol = self._volume(name)
                if vol is not None:
                    vol.delete(0)
            self._delete_console_logs(uuid)

    def _delete_console_logs(self, uuid: str) -> None:
        """The console log and the old ones virtlogd rotated beside it (<name>.0, .1, ...)."""
        pool = self._pool()
        self._refresh(pool)
        for vol in pool.listAllVolumes(0):
            if vol.name().startswith(console_log_volume(uuid)):
                vol.delete(0)

    def delete_image(self, image: ImageRef) -> None:
        with self._translated(f"delete image {image.volume}"):
            # The marker first: a volume left without it is never trusted again.
            for name in (complete_marker(image.volume), image.volume):
                vol = self._volume(name)
                if vol is not None:
                    vol.delete(0)

    def status(self, uuid: str) -> DomainStatus:
        with self._translated(f"status of {uuid}"):
            dom = self._domain(uuid)
            return DomainStatus(uuid, "missing") if dom is None else self._status_of(dom)

    def all_stats(self) -> list[DomainStats]:
        flags = (
            libvirt.VIR_DOMAIN_STATS_STATE
            | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
            | libvirt.VIR_DOMAIN_STATS_INTERFACE
            | libvirt.VIR_DOMAIN_STATS_BLOCK
        )
        with self._translated("domain stats"):
            result = []
            for dom, stats in self.conn.getAllDomainStats(flags, 0):
                if not dom.name().startswith("inst-"):
                    continue
                nets = int(stats.get("net.count", 0))
                blocks = int(stats.get("block.count", 0))
                power = POWER.get(stats.get("state.state", 0), "nostate")
                result.append(
                    DomainStats(
                        uuid=dom.UUIDString(),
                        power=power,
                        stopped_by=_stopped_by(stats) if power in ("shutoff", "crashed") else "",
                        cpu_time_ns=int(stats.get("cpu.time", 0)),
                        rx_bytes=sum(int(stats.get(f"net.{i}.rx.bytes", 0)) for i in range(nets)),
                        tx_bytes=sum(int(stats.get(f"net.{i}.tx.bytes", 0)) for i in range(nets)),
                        disk_allocation_bytes=sum(int(stats.get(f"block.{i}.allocation", 0)) for i in range(blocks)),
                    )
                )
            return result

    def set_bandwidth(self, uuid: str, mac: str, kbytes: int | None) -> dict:
        rate = kbytes or 0  # 0 lifts the limit
        params = {"inbound.average": rate, "outbound.average": rate}
        with self._translated(f"bandwidth of {uuid}"):
            dom = self._domain(uuid)
            if dom is None:
                raise HostError(f"domain {uuid} is not defined")
            # Two calls: the test driver refuses LIVE|CONFIG together as mutually exclusive.
            if dom.isActive():
                dom.setInterfaceParameters(mac, params, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            dom.setInterfaceParameters(mac, params, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            live = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else libvirt.VIR_DOMAIN_AFFECT_CONFIG
            return dom.interfaceParameters(mac, live)

    def network_info(self) -> NetworkInfo:
        with self._translated(f"network {self.host.network}"):
            net = self.conn.networkLookupByName(self.host.network)
            return lx.network_info_of(net.XMLDesc(0))

    def inventory(self) -> dict[str, list[str]]:
        with self._translated("inventory"):
            domains = [d.UUIDString() for d in self.conn.listAllDomains(0) if d.name().startswith("inst-")]
            pool = self._pool()
            pool.refresh(0)
            volumes = [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(("inst-", "img-"))]
            return {"domains": sorted(domains), "volumes": sorted(volumes)}


def driver_for(host: HostRef) -> ComputeDriver:
    return LibvirtDriver(host)
