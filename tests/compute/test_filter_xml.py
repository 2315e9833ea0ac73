"""The nwfilter XML written for each kind of rule, and a real libvirtd accepting it."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest

from compute.drivers import libvirt_xml as lx
from compute.drivers.base import PacketFilter, PacketRule


def rule_of(rule: PacketRule) -> ET.Element:
    root = ET.fromstring(lx.nwfilter_xml(PacketFilter(name="f", rules=(rule,))))  # noqa: S314 - our own or libvirt's XML
    return root.find("rule")


@pytest.mark.parametrize(
    ("rule", "attrs", "match", "protocol"),
    [
        (
            PacketRule("accept", "in", "tcp", 0, peer="203.0.113.0/24", dst_ports=(8080, 8081)),
            {"action": "accept", "direction": "in", "priority": "0"},
            {"srcipaddr": "203.0.113.0", "srcipmask": "24", "dstportstart": "8080", "dstportend": "8081"},
            "tcp",
        ),
        (
            PacketRule("accept", "out", "udp", 0, peer="10.0.0.1/32", dst_ports=(53, 53)),
            {"direction": "out"},
            {"dstipaddr": "10.0.0.1", "dstipmask": "32", "dstportstart": "53", "dstportend": "53"},
            "udp",
        ),
        (PacketRule("accept", "in", "icmp", 0), {"direction": "in"}, {}, "icmp"),
        (PacketRule("drop", "inout", "all", 1000), {"action": "drop", "priority": "1000"}, {}, "all"),
        (
            PacketRule("drop", "out", "all", -880, peer="10.0.0.1/32", new_only=True),
            {"action": "drop"},
            {"dstipaddr": "10.0.0.1", "state": "NEW"},
            "all",
        ),
        (
            PacketRule("accept", "in", "udp", -900, src_ports=(67, 67), dst_ports=(68, 68), stateful=False),
            {"statematch": "false"},
            {"srcportstart": "67", "srcportend": "67", "dstportstart": "68"},
            "udp",
        ),
    ],
    ids=["tcp-range-from-cidr", "udp-out-to-host", "icmp", "final-drop", "new-to-host", "dhcp-reply"],
)
def test_it_writes_each_kind_of_rule(rule, attrs, match, protocol):
    element = rule_of(rule)

    assert {k: element.get(k) for k in attrs} == attrs
    (proto,) = list(element)
    assert proto.tag == protocol
    assert {k: proto.get(k) for k in match} == match
    # the peer is the source of what comes in, the destination of what goes out: never both
    assert not (proto.get("srcipaddr") and proto.get("dstipaddr"))


def test_it_includes_filters_before_its_rules_and_keeps_its_uuid():
    spec = PacketFilter(name="portal.h.i.x", includes=("clean-traffic", "portal.h.sg.y"), rules=())
    known = str(uuid.uuid4())

    root = ET.fromstring(lx.nwfilter_xml(spec, known))  # noqa: S314 - our own or libvirt's XML

    assert root.get("chain") == "root"
    assert root.findtext("uuid") == known
    assert [ref.get("filter") for ref in root.iter("filterref")] == ["clean-traffic", "portal.h.sg.y"]


def test_it_puts_the_filter_and_the_guests_address_on_the_interface():
    cfg = lx.DomainConfig(
        uuid=str(uuid.uuid4()),
        name="inst-x",
        domain_type="qemu",
        vcpus=1,
        memory_mb=128,
        pool="p",
        disk_volume="d",
        seed_volume=None,
        network="n",
        mac="02:00:00:00:00:01",
        vnc_listen="127.0.0.1",
        bandwidth_kbytes=None,
        packet_filter="portal.h.i.x",
        ip="10.0.0.10",
    )

    ref = ET.fromstring(lx.domain_xml(cfg)).find("./devices/interface/filterref")  # noqa: S314 - our own or libvirt's XML

    assert ref.get("filter") == "portal.h.i.x"
    assert ref.find("parameter").attrib == {"name": "IP", "value": "10.0.0.10"}


@pytest.mark.e2e
def test_a_real_libvirtd_accepts_the_filters(request):
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        pytest.skip(f"END-TO-END SKIPPED: libvirtd cannot be reached: {exc}")
    from tests.conftest import RUN_ID

    group = PacketFilter(
        name=f"portal.t{RUN_ID}.sg.g",
        rules=(
            PacketRule("accept", "in", "tcp", 0, peer="203.0.113.0/24", dst_ports=(22, 22)),
            PacketRule("accept", "in", "icmp", 0),
            PacketRule("accept", "out", "all", 0),
        ),
    )
    instance = PacketFilter(
        name=f"portal.t{RUN_ID}.i.x",
        includes=("clean-traffic", group.name),
        rules=(PacketRule("drop", "inout", "all", 1000),),
    )
    try:
        for spec in (group, instance):
            conn.nwfilterDefineXML(lx.nwfilter_xml(spec))
        # libvirt keeps what was written: the referenced filter, the ports, the peer
        text = conn.nwfilterLookupByName(instance.name).XMLDesc(0)
        assert f"filter='{group.name}'" in text
        back = ET.fromstring(conn.nwfilterLookupByName(group.name).XMLDesc(0))  # noqa: S314 - our own or libvirt's XML
        tcp = back.find("./rule/tcp")
        assert (tcp.get("srcipaddr"), tcp.get("dstportstart")) == ("203.0.113.0", "22")
        # a redefinition with the same uuid is an update, not a second filter
        same = conn.nwfilterLookupByName(group.name).UUIDString()
        conn.nwfilterDefineXML(lx.nwfilter_xml(group, same))
        assert conn.nwfilterLookupByName(group.name).UUIDString() == same
    finally:
        for name in (instance.name, group.name):
            try:
                conn.nwfilterLookupByName(name).undefine()
            except libvirt.libvirtError:
                pass
        conn.close()
