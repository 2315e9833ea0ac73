"""A real libvirt host on this machine, set up with the project's own pool and network.

The network's egress is the operator's choice (`MODES`): NAT through the host (`make run`'s
default), isolated (the tests': guests reach only each other and the host's DHCP and DNS), or
routed (a public block routed to the host). Guests get DHCP from libvirt's dnsmasq, whose
dynamic range is kept apart from the portal's
address pool (`address_plan`): a guest only ever gets the address of its own host entry.
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


# Addresses at the top of each subnet that dnsmasq may hand to a MAC it has no entry for
# (a guest booted by hand, say). The portal's pool is the rest, so the two never meet.
DYNAMIC_ADDRESSES = 16


def address_plan(subnet: ipaddress.IPv4Network, gateway_index: int = 0) -> dict[str, str]:
    """Gateway, the portal's pool (first..last) and dnsmasq's own range, disjoint. Hosts of one
    segment (one L2 network) each take another of the first addresses as their gateway."""
    hosts = list(subnet.hosts())
    return {
        "gateway": str(hosts[gateway_index]),
        "pool_first": str(hosts[9]),
        "pool_last": str(hosts[-DYNAMIC_ADDRESSES - 1]),
        "dynamic_first": str(hosts[-DYNAMIC_ADDRESSES]),
        "dynamic_last": str(hosts[-1]),
    }


# How a network reaches beyond its host: libvirt's <forward mode>, or none (isolated).
MODES = {"nat": "nat", "route": "route", "isolated": None}


def _network_xml(
    name: str,
    bridge: str,
    subnet: ipaddress.IPv4Network,
    mode: str = "isolated",
    gateway_index: int = 0,
    static_only: bool = False,
) -> str:
    """`static_only`: dnsmasq answers only the MACs it has a host entry for, no dynamic range,
    as every host's dnsmasq on a shared segment must (each serves its own guests)."""
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
    if not static_only:
        ET.SubElement(dhcp, "range", start=plan["dynamic_first"], end=plan["dynamic_last"])
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
    """`segment`: gateway_index and static_only, for a host joining a shared segment."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        net = conn.networkDefineXML(_network_xml(name, bridge, free_subnet(conn), mode, **segment))
    if not net.isActive():
        net.create()
    return net


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
    static_only: bool = False,
) -> dict:
    """Make sure pool and network exist and run; the arguments that register the host. An
    existing network keeps the mode it was made with."""
    conn = libvirt.open(uri)
    try:
        ensure_pool(conn, pool, pool_dir)
        net = ensure_network(conn, network, bridge, mode, gateway_index=gateway_index, static_only=static_only)
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
