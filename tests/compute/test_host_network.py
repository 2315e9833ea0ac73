"""The DHCP configuration of the networks compute.localhost makes, on libvirt's test driver.

A network with a dynamic `<range>` makes libvirt write `dhcp-lease-max` = the range's size into
dnsmasq's configuration, and the portal's host entries count against it: a 17th guest of a
16-address range got no lease. tests/e2e/test_dhcp_capacity.py shows the real dnsmasq serving
more than that.
"""

from __future__ import annotations

import ipaddress
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest

from compute import localhost
from compute.drivers.libvirt_xml import dhcp_host_xml, dhcp_hosts_of, network_info_of

URI = "test:///default"


@pytest.fixture
def conn():
    conn = libvirt.open(URI)
    made: list[str] = []
    conn.made = made  # names to remove afterwards (test:///default lives as long as the process)
    yield conn
    for name in made:
        localhost.remove(conn, network=name)
    conn.close()


def unique(conn) -> str:
    name = f"hn-{uuid.uuid4().hex[:8]}"
    conn.made.append(name)
    return name


def ranges_of(net: libvirt.virNetwork) -> list[dict[str, str]]:
    root = ET.fromstring(net.XMLDesc(0))  # noqa: S314 - libvirt's own output
    return [dict(r.attrib) for r in root.iterfind("./ip/dhcp/range")]


def add_entry(net: libvirt.virNetwork, mac: str, ip: str, name: str) -> None:
    """As the builds write them (compute.drivers.libvirt, ensure_dhcp)."""
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG | libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    xml = dhcp_host_xml(mac, ip, name, 600)
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)


def define_old_style(conn, name: str, start: str, end: str) -> libvirt.virNetwork:
    """A network as older versions of compute.localhost made it, or an operator's with a range."""
    subnet = localhost.free_subnet(conn)
    gateway = next(subnet.hosts())
    return conn.networkDefineXML(
        f"<network><name>{name}</name><bridge name='vb{name[3:]}' stp='on' delay='0'/>"
        f"<ip address='{gateway}' netmask='{subnet.netmask}'><dhcp><range start='{start}' end='{end}'/>"
        "</dhcp></ip></network>"
    )


@pytest.mark.parametrize("gateway_index", [0, 1])
def test_it_makes_networks_whose_dhcp_has_no_dynamic_range(conn, gateway_index):
    # when
    net = localhost.ensure_network(conn, unique(conn), "vbhn0", gateway_index=gateway_index)

    # then: static-only DHCP (libvirt writes no dhcp-lease-max), for the portal's entries only,
    # running from the start for an entry no machine matches (on a reserved address)
    assert net.isActive()
    assert ranges_of(net) == []
    subnet = ipaddress.ip_network(network_info_of(net.XMLDesc(0)).cidr)
    anchor = {"mac": localhost.DHCP_ANCHOR_MAC, "ip": str(list(subnet.hosts())[-1])}
    assert dhcp_hosts_of(net.XMLDesc(0)) == [anchor]
    pool_last = localhost.address_plan(subnet)["pool_last"]
    assert ipaddress.ip_address(anchor["ip"]) > ipaddress.ip_address(pool_last)  # never given out
    info = network_info_of(net.XMLDesc(0))
    assert info.gateway == str(list(ipaddress.ip_network(info.cidr).hosts())[gateway_index])


def test_it_takes_host_entries_for_the_whole_pool(conn):
    # given
    net = localhost.ensure_network(conn, unique(conn), "vbhn1")
    plan = localhost.address_plan(ipaddress.ip_network(network_info_of(net.XMLDesc(0)).cidr))
    first, last = (ipaddress.ip_address(plan[k]) for k in ("pool_first", "pool_last"))

    # when: an entry for every address of the pool
    for n in range(int(last) - int(first) + 1):
        add_entry(net, f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}", str(first + n), f"i-{n}")

    # then: the pool's entries, and the anchor that keeps dnsmasq's DHCP running
    entries = dhcp_hosts_of(net.XMLDesc(0))
    assert len([e for e in entries if e["mac"] != localhost.DHCP_ANCHOR_MAC]) == int(last) - int(first) + 1 == 229
    assert ranges_of(net) == []


def test_it_drops_the_dynamic_range_an_older_version_gave_a_running_network(conn):
    # given: the old shape (the top 16 addresses dynamic), running, with a guest's entry
    name = unique(conn)
    subnet = localhost.free_subnet(conn)
    hosts = list(subnet.hosts())
    net = define_old_style(conn, name, str(hosts[-16]), str(hosts[-1]))
    net.create()
    add_entry(net, "02:00:00:00:00:01", str(hosts[9]), "i-one")

    # when: `make run` prepares it again
    net = localhost.ensure_network(conn, name, f"vb{name[3:]}")

    # then: no range, and the entry is kept, in the running network and in its definition
    # (the test driver shows an inactive network's definition only)
    assert net.isActive()
    assert ranges_of(net) == [] and [e["mac"] for e in dhcp_hosts_of(net.XMLDesc(0))] == ["02:00:00:00:00:01"]
    net.destroy()
    assert ranges_of(net) == [] and [e["mac"] for e in dhcp_hosts_of(net.XMLDesc(0))] == ["02:00:00:00:00:01"]


def test_it_drops_the_old_range_of_a_network_that_is_not_running(conn):
    name = unique(conn)
    hosts = list(localhost.free_subnet(conn).hosts())
    define_old_style(conn, name, str(hosts[-16]), str(hosts[-1]))

    net = localhost.ensure_network(conn, name, f"vb{name[3:]}")

    assert net.isActive() and ranges_of(net) == []
    net.destroy()
    assert ranges_of(net) == []


def test_it_leaves_a_range_it_did_not_make_alone(conn):
    # given: an operator's network with a range of their own
    name = unique(conn)
    hosts = list(localhost.free_subnet(conn).hosts())
    define_old_style(conn, name, str(hosts[99]), str(hosts[199]))

    # when
    net = localhost.ensure_network(conn, name, f"vb{name[3:]}")

    # then
    assert ranges_of(net) == [{"start": str(hosts[99]), "end": str(hosts[199])}]


def test_it_plans_the_pool_apart_from_the_gateway_and_the_reserved_top():
    plan = localhost.address_plan(ipaddress.ip_network("10.254.7.0/24"))
    assert plan == {"gateway": "10.254.7.1", "pool_first": "10.254.7.10", "pool_last": "10.254.7.238"}
