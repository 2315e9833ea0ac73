"""Hosts simulated by libvirt's built-in test driver, described by a node XML file.

`test:///path/to/host.xml` gives every new connection a fresh host with the CPUs, memory,
storage pool and network that the file describes, so one process can stand in for several
hosts of different sizes. The fast test suite, the benchmarks and a `make run` without
libvirtd use these; nothing but data is involved: no guest runs and no packet is sent.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

# The test driver gives every pool this capacity whatever the file says.
POOL_GB = 100


def host_xml(*, name: str, cpus: int, memory_mb: int, subnet: int, shared_pool: str | None = None) -> str:
    """A node with one dir pool `<name>-pool` (POOL_GB) and one network `<name>-net` on
    10.<100+a>.<b>.0/24, which exists only as data inside the test driver; and `shared_pool`,
    a second pool standing in for storage shared with other hosts (a test copies what the
    other hosts would see there: the test driver's pools are its own)."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in [
        ("nodes", 1),
        ("sockets", 1),
        ("cores", cpus),
        ("threads", 1),
        ("active", cpus),
        ("mhz", 2000),
        ("model", "x86_64"),
    ]:
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(memory_mb * 1024)
    pool = ET.SubElement(node, "pool", type="dir")
    ET.SubElement(pool, "name").text = f"{name}-pool"
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = f"/{name}-pool"
    if shared_pool:
        shared = ET.SubElement(node, "pool", type="dir")
        ET.SubElement(shared, "name").text = shared_pool
        ET.SubElement(ET.SubElement(shared, "target"), "path").text = f"/{shared_pool}"
    net = ET.SubElement(node, "network")
    ET.SubElement(net, "name").text = f"{name}-net"
    ET.SubElement(net, "bridge", name=f"vb{subnet}")
    a, b = divmod(subnet, 256)
    ip = ET.SubElement(net, "ip", address=f"10.{100 + a}.{b}.1", netmask="255.255.255.0")
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=f"10.{100 + a}.{b}.10", end=f"10.{100 + a}.{b}.250")
    return ET.tostring(node, encoding="unicode")


def write_host(
    directory: Path, *, name: str, cpus: int = 8, memory_mb: int = 16384, subnet: int = 0, shared_pool: str = ""
) -> dict:
    """Write the node file and return the arguments that register it as a host."""
    path = directory / f"{name}.xml"
    path.write_text(host_xml(name=name, cpus=cpus, memory_mb=memory_mb, subnet=subnet, shared_pool=shared_pool))
    return {
        "name": name,
        "uri": f"test://{path}",
        "storage_pool": f"{name}-pool",
        "network": f"{name}-net",
        "shaping": True,
    }
