"""A real libvirt host on this machine, set up with the project's own pool and network.

The network's egress is the operator's choice (`MODES`): NAT through the host (`make run`'s
default), isolated (the tests': guests reach only each other and the host's DHCP and DNS), or
routed (a public block routed to the host). Guests get DHCP from libvirt's dnsmasq, which
answers only the MACs the portal wrote a host entry for (no dynamic range): a guest only ever
gets the address of its own entry, and a network serves as many guests as its pool holds.
Used by `make run` when libvirtd answers, and by the end-to-end suite with names unique to
the run.
"""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
import xml.etree.ElementTree as ET
from contextlib import suppress
from pathlib import Path

import libvirt

from compute.drivers.libvirt_xml import network_info_of


def _pool_xml(name: str, path: Path) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = str(path)
    return ET.tostring(pool, encoding="unicode")


# Addresses at the top of each subnet the portal never gives out: older versions of this
# module made them dnsmasq's dynamic range, and the pool of a host registered then ends below.
RESERVED_ADDRESSES = 16


def address_plan(subnet: ipaddress.IPv4Network, gateway_index: int = 0) -> dict[str, str]:
    """Gateway and the portal's pool (first..last). Hosts of one segment (one L2 network) each
    take another of the first addresses as their gateway."""
    hosts = list(subnet.hosts())
    return {
        "gateway": str(hosts[gateway_index]),
        "pool_first": str(hosts[9]),
        "pool_last": str(hosts[-RESERVED_ADDRESSES - 1]),
    }


def _old_dynamic_range(subnet: ipaddress.IPv4Network) -> tuple[str, str]:
    hosts = list(subnet.hosts())
    return str(hosts[-RESERVED_ADDRESSES]), str(hosts[-1])


# A host entry no guest can match, in every network this module makes: a locally administered
# MAC (the portal's own all begin with 02), on the subnet's last address (reserved). libvirt runs
# dnsmasq's DHCP only while a network has a range or a host entry: without this one, the first
# guest's entry restarted dnsmasq (about 2 s, measured: a build or a migration onto an empty
# host waited for it) and the last one's removal restarted it again. With it, every entry
# added or removed is a reload (about 0.2 s).
DHCP_ANCHOR_MAC = "06:00:00:00:00:00"


def dhcp_anchor_ip(subnet: ipaddress.IPv4Network) -> str:
    return str(list(subnet.hosts())[-1])


# How a network reaches beyond its host: libvirt's <forward mode>, or none (isolated).
MODES = {"nat": "nat", "route": "route", "isolated": None}


def _network_xml(
    name: str,
    bridge: str,
    subnet: ipaddress.IPv4Network,
    mode: str = "isolated",
    gateway_index: int = 0,
) -> str:
    """DHCP without a `<range>`: libvirt then runs dnsmasq with `dhcp-range=<gateway>,static`,
    which answers only the MACs it has a host entry for (as every host's dnsmasq on a shared
    segment must: each serves its own guests), and writes no `dhcp-lease-max`, so dnsmasq's
    own default (1,000 leases) applies instead of the size of a range. With a range, libvirt
    caps the leases at its size, and the portal's host entries count against it (a 17th guest
    of a 16-address range got no lease). The one entry it is made with is `DHCP_ANCHOR_MAC`'s.
    See docs/operations.md, "Addresses"."""
    if mode not in MODES:
        raise ValueError(f"network mode {mode!r} is not one of {', '.join(MODES)}")
    plan = address_plan(subnet, gateway_index)
    net = ET.Element("network")
    ET.SubElement(net, "name").text = name
    if MODES[mode]:
        ET.SubElement(net, "forward", mode=MODES[mode])
    ET.SubElement(net, "bridge", name=bridge, stp="on", delay="0")
    ip = ET.SubElement(net, "ip", address=plan["gateway"], netmask=str(subnet.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "host", mac=DHCP_ANCHOR_MAC, ip=dhcp_anchor_ip(subnet))
    return ET.tostring(net, encoding="unicode")


def used_subnets(conn: libvirt.virConnect) -> list[ipaddress.IPv4Network]:
    subnets = []
    for net in conn.listAllNetworks(0):
        try:
            subnets.append(ipaddress.ip_network(network_info_of(net.XMLDesc(0)).cidr))
        except ValueError:
            continue
        except libvirt.libvirtError:
            # Removed since the listing (another test process's teardown): its subnet is free.
            continue
    return subnets


def free_subnet(conn: libvirt.virConnect, base: str = "10.254.0.0/16", prefix: int = 24) -> ipaddress.IPv4Network:
    taken = used_subnets(conn)
    for candidate in ipaddress.ip_network(base).subnets(new_prefix=prefix):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise RuntimeError(f"no free /{prefix} in {base}")


def ensure_pool(conn: libvirt.virConnect, name: str, path: Path) -> libvirt.virStoragePool:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        path.mkdir(parents=True, exist_ok=True)
        pool = conn.storagePoolDefineXML(_pool_xml(name, path), 0)
    if not pool.isActive():
        pool.create(0)
    return pool


def ensure_network(
    conn: libvirt.virConnect, name: str, bridge: str, mode: str = "isolated", **segment
) -> libvirt.virNetwork:
    """`segment`: gateway_index, for a host joining a shared segment. A network an older
    version of this module made loses its dynamic range (see `_drop_old_dynamic_range`)."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        net = conn.networkDefineXML(_network_xml(name, bridge, free_subnet(conn), mode, **segment))
    _drop_old_dynamic_range(net)
    if not net.isActive():
        net.create()
    return net


def _drop_old_dynamic_range(net: libvirt.virNetwork) -> None:
    """Older versions gave each network a dynamic range of the top `RESERVED_ADDRESSES`, so
    libvirt told dnsmasq `dhcp-lease-max=16`: a 17th guest got no lease. That range, exactly,
    is deleted through libvirt's update API, which restarts only dnsmasq (with
    `dhcp-range=<gateway>,static`): the bridge and its running guests stay as they are, and
    their host entries and leases are kept. A network made otherwise (an operator's own) is
    left alone."""
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    xml = net.XMLDesc(0)
    ip = ET.fromstring(xml).find("./ip")  # noqa: S314 - libvirt's own output
    ranges = ip.findall("./dhcp/range") if ip is not None else []
    if len(ranges) != 1:
        return
    start, end = _old_dynamic_range(ipaddress.ip_network(network_info_of(xml).cidr))
    if (ranges[0].get("start"), ranges[0].get("end")) != (start, end):
        return
    old = ET.tostring(ET.Element("range", start=start, end=end), encoding="unicode")
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE, -1, old, flags)


def remove(conn: libvirt.virConnect, *, pool: str | None = None, network: str | None = None) -> None:
    """Tear down what ensure_* made (volumes included); missing parts are skipped."""
    if network:
        try:
            net = conn.networkLookupByName(network)
            if net.isActive():
                net.destroy()
            net.undefine()
        except libvirt.libvirtError:
            pass
    if pool:
        try:
            p = conn.storagePoolLookupByName(pool)
        except libvirt.libvirtError:
            return
        # Each part on its own: a file that appeared after the listing (virtlogd writes the
        # guests' console logs into the pool) makes delete() fail, and the pool must still go.
        with suppress(libvirt.libvirtError):
            if not p.isActive():
                p.create(0)
            for vol in p.listAllVolumes(0):
                vol.delete(0)
        with suppress(libvirt.libvirtError):
            p.destroy()
        with suppress(libvirt.libvirtError):
            p.delete(0)
        with suppress(libvirt.libvirtError):
            p.undefine()


def prepare(
    uri: str,
    *,
    pool: str,
    pool_dir: Path,
    network: str,
    bridge: str,
    mode: str = "isolated",
    gateway_index: int = 0,
) -> dict:
    """Make sure pool and network exist and run; the arguments that register the host. An
    existing network keeps the mode it was made with."""
    conn = libvirt.open(uri)
    try:
        ensure_pool(conn, pool, pool_dir)
        net = ensure_network(conn, network, bridge, mode, gateway_index=gateway_index)
        subnet = ipaddress.ip_network(network_info_of(net.XMLDesc(0)).cidr)
    finally:
        conn.close()
    plan = address_plan(subnet)
    return {
        "uri": uri,
        "storage_pool": pool,
        "network": network,
        "pool_first": plan["pool_first"],
        "pool_last": plan["pool_last"],
    }


def kernel_can_shape() -> bool:
    """Whether libvirt's <bandwidth> can work here: it runs `tc ... sfq`, and a kernel without
    sfq makes the domain fail to start. Tried on the loopback of a throwaway namespace."""
    namespace = f"portal-shape-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", namespace], capture_output=True).returncode != 0:
        return False
    try:
        probe = ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo", "root", "sfq"]
        return subprocess.run(probe, capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
