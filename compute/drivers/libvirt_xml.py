"""Typed builders of libvirt XML. No policy here: callers decide, these only spell it.

Built with ElementTree so nothing is ever string-formatted into the document; the only values
in it are derived from UUIDs, numbers and operator settings, never from what a user typed.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from compute.drivers.base import NetworkInfo, PacketFilter, PacketRule


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def _xml(root: ET.Element) -> str:
    return ET.tostring(root, encoding="unicode")


def volume_xml(
    name: str, capacity_bytes: int, fmt: str, backing_path: str | None = None, backing_format: str = "qcow2"
) -> str:
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type=fmt)
    if backing_path:
        backing = _sub(root, "backingStore")
        _sub(backing, "path", backing_path)
        _sub(backing, "format", type=backing_format)
    return _xml(root)


def dhcp_host_xml(mac: str, ip: str, hostname: str | None = None, lease_seconds: int | None = None) -> str:
    """A DHCP host entry; without a name it matches an entry by MAC and IP, as deletion needs.
    `lease_seconds` bounds how long the DHCP server remembers the guest after it is gone."""
    attrs = {"mac": mac, "ip": ip}
    if hostname:
        attrs["name"] = hostname
    host = ET.Element("host", attrs)
    if lease_seconds:
        _sub(host, "lease", expiry=str(lease_seconds), unit="seconds")
    return _xml(host)


@dataclass(frozen=True)
class DomainConfig:
    uuid: str
    name: str
    domain_type: str
    vcpus: int
    memory_mb: int
    pool: str
    disk_volume: str
    seed_volume: str | None
    network: str
    mac: str
    vnc_listen: str
    bandwidth_kbytes: int | None
    # An install CD (a volume of the pool), booted before the disk while it is attached.
    iso_volume: str | None = None
    # Rescue: this volume boots as vda, and the instance's own disk follows as vdb.
    rescue_volume: str | None = None
    # A file on the host that libvirt's virtlogd fills with everything the serial port prints.
    console_log: str | None = None
    # A virtio-serial channel for qemu-guest-agent (password reset, where the guest runs one).
    guest_agent: bool = True
    # The interface's nwfilter and the guest's address, its one allowed source address.
    packet_filter: str | None = None
    ip: str | None = None


# The BIOS's boot order: the install CD first while one is attached, then the first disk.
CDROM_TARGET = {"dev": "hdc", "bus": "ide"}
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _disk(devices: ET.Element, pool: str, volume: str, dev: str, fmt: str, readonly: bool = False) -> ET.Element:
    disk = _sub(devices, "disk", type="volume", device="disk")
    _sub(disk, "driver", name="qemu", type=fmt)
    _sub(disk, "source", pool=pool, volume=volume)
    _sub(disk, "target", dev=dev, bus="virtio")
    if readonly:
        _sub(disk, "readonly")
    return disk


def cdrom_xml(pool: str | None = None, volume: str | None = None) -> str:
    """The CD-ROM drive; without a volume, an empty drive (what an eject leaves)."""
    return _xml(_cdrom(ET.Element("devices"), pool, volume))


def _cdrom(devices: ET.Element, pool: str | None, volume: str | None) -> ET.Element:
    # IDE on the default i440fx machine: its PIIX controller is built in, SeaBIOS boots El Torito
    # from it, and every installer kernel has ata_piix (not every one has AHCI, see the seed).
    cdrom = _sub(devices, "disk", type="volume", device="cdrom")
    _sub(cdrom, "driver", name="qemu", type="raw")
    if volume:
        _sub(cdrom, "source", pool=pool, volume=volume)
    _sub(cdrom, "target", **CDROM_TARGET)
    _sub(cdrom, "readonly")
    return cdrom


def domain_xml(cfg: DomainConfig) -> str:
    root = ET.Element("domain", type=cfg.domain_type)
    _sub(root, "name", cfg.name)
    _sub(root, "uuid", cfg.uuid)
    _sub(root, "memory", str(cfg.memory_mb), unit="MiB")
    _sub(root, "currentMemory", str(cfg.memory_mb), unit="MiB")
    _sub(root, "vcpu", str(cfg.vcpus))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    if cfg.iso_volume and not cfg.rescue_volume:
        _sub(os_el, "boot", dev="cdrom")
    _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    if cfg.rescue_volume:
        # The rescue system boots from vda; the customer's disk is vdb, to be mounted and
        # repaired. No seed and no CD: nothing of the instance's own boots.
        _disk(devices, cfg.pool, cfg.rescue_volume, "vda", "qcow2")
        _disk(devices, cfg.pool, cfg.disk_volume, "vdb", "qcow2")
    else:
        _disk(devices, cfg.pool, cfg.disk_volume, "vda", "qcow2")
        if cfg.seed_volume:
            # A read-only virtio disk, not a CD-ROM: Debian's cloud kernel has no AHCI driver, so
            # a SATA seed is invisible to it, and every cloud kernel has virtio_blk. After the
            # root disk, so that it is vdb and SeaBIOS boots vda.
            _disk(devices, cfg.pool, cfg.seed_volume, "vdb", "raw", readonly=True)
        if cfg.iso_volume:
            _cdrom(devices, cfg.pool, cfg.iso_volume)
    iface = _sub(devices, "interface", type="network")
    _sub(iface, "mac", address=cfg.mac)
    _sub(iface, "source", network=cfg.network)
    _sub(iface, "model", type="virtio")
    if cfg.packet_filter:
        filterref = _sub(iface, "filterref", filter=cfg.packet_filter)
        if cfg.ip:
            # clean-traffic's $IP: the only source address the guest may send from or claim in ARP.
            _sub(filterref, "parameter", name="IP", value=cfg.ip)
    if cfg.bandwidth_kbytes:
        bandwidth = _sub(iface, "bandwidth")
        _sub(bandwidth, "inbound", average=str(cfg.bandwidth_kbytes))
        _sub(bandwidth, "outbound", average=str(cfg.bandwidth_kbytes))
    serial = _sub(devices, "serial", type="pty")
    if cfg.console_log:
        # virtlogd writes the file on the host, across restarts of the guest (append).
        _sub(serial, "log", file=cfg.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if cfg.guest_agent:
        # libvirt makes the host side's socket; the guest's qemu-guest-agent answers on it.
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes", listen=cfg.vnc_listen)
    _sub(graphics, "listen", type="address", address=cfg.vnc_listen)
    video = _sub(devices, "video")
    _sub(video, "model", type="vga")
    return _xml(root)


def dns_host_xml(ip: str, names: tuple[str, ...] = ()) -> str:
    """A network's DNS host record; without names it matches the record by address (delete)."""
    host = ET.Element("host", ip=ip)
    for name in names:
        _sub(host, "hostname", name)
    return _xml(host)


def dns_hosts_of(network_xml_text: str) -> dict[str, list[str]]:
    """Address -> names of a network's DNS host records."""
    root = ET.fromstring(network_xml_text)  # noqa: S314 - libvirt's own output
    return {h.get("ip", ""): [n.text or "" for n in h.iterfind("hostname")] for h in root.iterfind("./dns/host")}


def _rule_xml(filter_el: ET.Element, rule: PacketRule) -> None:
    attrs = {"action": rule.action, "direction": rule.direction, "priority": str(rule.priority)}
    if not rule.stateful:
        attrs["statematch"] = "false"
    el = _sub(filter_el, "rule", **attrs)
    match: dict[str, str] = {}
    if rule.peer:
        network = ipaddress.ip_network(rule.peer, strict=False)
        # The peer is the source of what comes in and the destination of what goes out.
        side = "src" if rule.direction == "in" else "dst"
        match[f"{side}ipaddr"] = str(network.network_address)
        match[f"{side}ipmask"] = str(network.prefixlen)
    for side, ports in (("dst", rule.dst_ports), ("src", rule.src_ports)):
        if ports is not None:
            match[f"{side}portstart"] = str(ports[0])
            match[f"{side}portend"] = str(ports[1])
    if rule.new_only:
        match["state"] = "NEW"
    _sub(el, rule.protocol, **match)


def nwfilter_xml(spec: PacketFilter, uuid: str | None = None) -> str:
    """libvirt's <filter>: included filters first, then the rules. In the root chain, so its
    protocol rules (tcp, udp, icmp, all) become iptables rules on the guest's interface.
    `uuid` keeps a redefinition an update of the same filter."""
    root = ET.Element("filter", name=spec.name, chain="root")
    if uuid:
        _sub(root, "uuid", uuid)
    for name in spec.includes:
        _sub(root, "filterref", filter=name)
    for rule in spec.rules:
        _rule_xml(root, rule)
    return _xml(root)


def nwfilter_uuid_of(filter_xml_text: str) -> str | None:
    return ET.fromstring(filter_xml_text).findtext("uuid")  # noqa: S314 - libvirt's own output


def retarget_domain(
    domain_xml_text: str,
    *,
    pool: str,
    network: str,
    vnc_listen: str,
    packet_filter: str | None,
    console_log: str | None,
) -> str:
    """A running domain's own (migratable) XML as it is to be on another host: its volumes in
    that host's pool, its interface on that host's network and filter, VNC on that host's
    address, the console log in that host's pool. Nothing else changes, so the guest's
    machine stays the same across a live migration."""
    root = ET.fromstring(domain_xml_text)  # noqa: S314 - libvirt's own output
    for source in root.iterfind("./devices/disk/source[@pool]"):
        source.set("pool", pool)
    for iface in root.iterfind("./devices/interface[@type='network']"):
        source = iface.find("source")
        if source is not None:
            source.set("network", network)
            source.attrib.pop("bridge", None)
        filterref = iface.find("filterref")
        if filterref is not None:
            if packet_filter:
                filterref.set("filter", packet_filter)
            else:
                iface.remove(filterref)
    for graphics in root.iterfind("./devices/graphics[@type='vnc']"):
        graphics.set("listen", vnc_listen)
        for listen in graphics.iterfind("listen"):
            listen.set("address", vnc_listen)
    for log in root.iterfind("./devices/serial/log"):
        if console_log:
            log.set("file", console_log)
    return _xml(root)


def vnc_port_of(domain_xml_text: str) -> int | None:
    graphics = ET.fromstring(domain_xml_text).find("./devices/graphics[@type='vnc']")  # noqa: S314 - libvirt's own output
    if graphics is None:
        return None
    port = int(graphics.get("port", "-1"))
    return port if port > 0 else None


def dhcp_hosts_of(network_xml_text: str) -> list[dict[str, str]]:
    root = ET.fromstring(network_xml_text)  # noqa: S314 - libvirt's own output
    return [dict(h.attrib) for h in root.iterfind("./ip/dhcp/host")]


def backing_path_of(volume_xml_text: str) -> str | None:
    path = ET.fromstring(volume_xml_text).find("./backingStore/path")  # noqa: S314 - libvirt's own output
    return path.text if path is not None else None


def pool_path_of(pool_xml_text: str) -> str:
    return ET.fromstring(pool_xml_text).findtext("./target/path") or ""  # noqa: S314 - libvirt's own output


def network_info_of(network_xml_text: str) -> NetworkInfo:
    """Subnet, gateway and DHCP range of the first IPv4 <ip> of a network."""
    ip = ET.fromstring(network_xml_text).find("./ip")  # noqa: S314 - libvirt's own output
    if ip is None:
        raise ValueError("the network has no <ip> element")
    gateway = ip.get("address", "")
    prefix = ip.get("prefix") or str(ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen)
    subnet = ipaddress.ip_network(f"{gateway}/{prefix}", strict=False)
    dhcp_range = ip.find("./dhcp/range")
    hosts = list(subnet.hosts()) if dhcp_range is None else None
    first = dhcp_range.get("start") if dhcp_range is not None else str(hosts[1])
    last = dhcp_range.get("end") if dhcp_range is not None else str(hosts[-1])
    return NetworkInfo(cidr=str(subnet), gateway=gateway, first=first, last=last)
