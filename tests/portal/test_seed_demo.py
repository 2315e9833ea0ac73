"""`seed_demo` registers this machine's host on a bridge named after LIBVIRT_NETWORK."""

import io
import re
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest
from django.core.management import call_command

from compute import localhost
from compute.models import Host
from portal.management.commands.seed_demo import bridge_name

pytestmark = pytest.mark.django_db
VALID = re.compile(r"^[a-z0-9-]{1,15}$")  # Linux: 15 characters at most (IFNAMSIZ - 1)


@pytest.mark.parametrize(
    "network",
    ["portal-net", "portal-net-2", "Portal Net", "portal_net", "a" * 60, "-", "my.deploy/net:1", "网络"],
)
def test_it_makes_a_valid_linux_bridge_name_of_any_network_name(network):
    assert VALID.match(bridge_name(network)), bridge_name(network)


def test_it_gives_each_network_its_own_bridge():
    # given: names that differ only where a shortened or cleaned-up name would lose it
    names = ["portal-net", "portal-net-2", "portal-net-3", "portal_net", "Portal-Net", "x" * 30, "x" * 31]
    names += [f"deployment-{i}-network" for i in range(200)]

    bridges = {bridge_name(name) for name in names}

    assert len(bridges) == len(names)
    assert bridge_name("portal-net") == "vbr-portal-net"  # a usable name shows as it is


def test_it_defines_the_network_with_the_bridge_of_its_name(settings, tmp_path):
    run = uuid.uuid4().hex[:8]
    settings.LIBVIRT_DEFAULT_URI = "test:///default"  # in-process: nothing is left on the machine
    settings.LIBVIRT_NETWORK = f"seed-test-{run}-network"
    settings.LIBVIRT_POOL = f"seed-test-{run}"
    settings.LIBVIRT_POOL_DIR = tmp_path / "pool"
    conn = libvirt.open("test:///default")
    try:
        call_command("seed_demo", stdout=io.StringIO())

        xml = conn.networkLookupByName(settings.LIBVIRT_NETWORK).XMLDesc(0)
        bridge = ET.fromstring(xml).find("bridge")  # noqa: S314 (libvirt's own XML)
        assert bridge.get("name") == bridge_name(settings.LIBVIRT_NETWORK) != "virbr-portal"
        assert Host.objects.get(name="local").network == settings.LIBVIRT_NETWORK
    finally:
        localhost.remove(conn, pool=settings.LIBVIRT_POOL, network=settings.LIBVIRT_NETWORK)
        conn.close()
