"""A host network made by compute.localhost leases an address to every instance of its pool.

libvirt writes `dhcp-lease-max` = the size of a network's dynamic `<range>` into dnsmasq's
configuration, and the portal's host entries count against it: on the 16-address range these
networks had, the 17th guest got a NAK. Real guests under TCG are heavy here, so each "guest" is
a network namespace with a veth on the network's bridge, carrying an instance's MAC, where
busybox's udhcpc asks the real dnsmasq libvirt runs for a lease, as a guest's DHCP client does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path

import libvirt
import pytest

from compute import localhost, services
from compute.driver_refs import driver
from compute.drivers.libvirt_xml import dhcp_host_xml, network_info_of
from compute.models import Flavor, Host
from compute.sizing import Size
from tenants.models import Quota
from tests.conftest import RUN_ID, actor
from tests.e2e.conftest import URI, networks_lock

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GUESTS = 20  # one bulk create's most (BULK_CREATE_MAX), more than the old 16
DNSMASQ_DIR = Path("/var/lib/libvirt/dnsmasq")
# A DHCP exchange on the bridge takes well under a second; the rest is room for a loaded machine.
CLIENT_SECONDS = 60


class Clients:
    """Network namespaces on a bridge, each with a veth of a given MAC and a DHCP client; all
    named for this run, and all removed by `remove()`, whatever state they are in."""

    def __init__(self, bridge: str):
        self.bridge = bridge
        self.tag = f"{RUN_ID}{uuid.uuid4().hex[:2]}"  # veth names: at most 15 characters
        self.namespaces: list[str] = []
        self.veths: list[str] = []
        self.running: list[subprocess.Popen] = []

    def ask(self, n: int, mac: str, *, tries: int = 10) -> subprocess.Popen:
        namespace, outside, inside = f"dhcp-{self.tag}-{n}", f"vd{self.tag}{n:02d}", f"vp{self.tag}{n:02d}"
        self.namespaces.append(namespace)
        run("ip", "netns", "add", namespace)
        self.veths.append(outside)
        run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
        run("ip", "link", "set", outside, "master", self.bridge, "up")
        run("ip", "-n", namespace, "link", "set", inside, "address", mac, "up")
        # -q: quit once leased, without releasing the lease (it must stay held); -n: give up
        # after `tries` discovers; -s /bin/true: configure nothing.
        client = ["udhcpc", "-i", inside, "-f", "-q", "-n", "-t", str(tries), "-T", "2", "-s", "/bin/true"]
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "timeout", str(CLIENT_SECONDS), *client],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.running.append(process)
        return process

    def remove(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        for veth in self.veths:  # gone with its namespace's end, unless that failed
            subprocess.run(["ip", "link", "del", veth], capture_output=True)


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=30).stdout


def leased_address(process: subprocess.Popen) -> tuple[str | None, str]:
    output, _ = process.communicate(timeout=CLIENT_SECONDS + 10)
    found = re.search(r"lease of (\S+) obtained", output)
    return (found.group(1) if found else None), output


@pytest.fixture
def clients(real_host, hypervisor):
    if shutil.which("udhcpc") is None:
        pytest.skip("END-TO-END SKIPPED: udhcpc is not installed (make test installs it as root)")
    made = Clients(hypervisor.networkLookupByName(real_host.network).bridgeName())
    yield made
    made.remove()


def test_a_host_network_leases_an_address_to_every_instance_of_a_bulk_create(
    hypervisor, real_host, clients, image, alice, tenant_a
):
    # given: 20 instances from one bulk create on the host, and the DHCP host entries their
    # builds write (the provision's "dhcp" step), but no guest booted
    Host.objects.filter(pk=real_host.pk).update(cpu_ratio=Decimal(GUESTS))
    Quota.objects.filter(tenant=tenant_a).update(instances=GUESTS, vcpus=GUESTS)
    flavor = Flavor.objects.create(name="f1.dhcp", vcpus=1, memory_mb=64, disk_gb=1, bandwidth_mbit=10, traffic_gb=1)
    request = services.CreateRequest(
        name="dhcp-{n}", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    instances = services.instances_create(actor=actor(alice, tenant_a), request=request, count=GUESTS)
    drv = driver(real_host)
    for instance in instances:
        drv.ensure_dhcp(instance.mac_address, instance.ip_address, f"i-{instance.pk.hex}")
    network = hypervisor.networkLookupByName(real_host.network)

    # when: each asks for a lease, all at once; and a MAC the portal gave no entry asks too
    asking = [clients.ask(n, instance.mac_address) for n, instance in enumerate(instances)]
    stranger = clients.ask(GUESTS, "02:ff:00:00:00:01", tries=3)

    # then: every one holds its instance's own address, all at the same time
    for instance, process in zip(instances, asking, strict=True):
        address, output = leased_address(process)
        assert address == instance.ip_address, f"{instance.name} ({instance.mac_address}):\n{output}"
    expected = {i.mac_address.lower(): i.ip_address for i in instances}
    deadline = time.monotonic() + 30  # libvirt's lease helper records them just after
    while (held := {lease["mac"].lower(): lease["ipaddr"] for lease in network.DHCPLeases()}) != expected:
        assert time.monotonic() < deadline, f"leases held: {held}"
        time.sleep(0.5)

    # and nothing for the stranger: dnsmasq serves the portal's entries only
    address, output = leased_address(stranger)
    assert address is None, output

    # and what libvirt told dnsmasq: static-only DHCP, with no lease cap of libvirt's own
    config = (DNSMASQ_DIR / f"{real_host.network}.conf").read_text()
    assert f"dhcp-range={network_info_of(network.XMLDesc(0)).gateway},static" in config
    assert "dhcp-lease-max" not in config


def test_a_network_made_by_an_older_version_loses_its_lease_cap_in_place(hypervisor, tmp_path):
    # given: a running network with the old 16-address dynamic range (so dhcp-lease-max=16),
    # and a guest's host entry
    name = f"e2e-old-{RUN_ID}"
    bridge = f"vbold{RUN_ID[:6]}"
    try:
        with networks_lock():
            subnet = localhost.free_subnet(hypervisor)
            hosts = list(subnet.hosts())
            net = hypervisor.networkDefineXML(
                f"<network><name>{name}</name><bridge name='{bridge}' stp='on' delay='0'/>"
                f"<ip address='{hosts[0]}' netmask='{subnet.netmask}'><dhcp>"
                f"<range start='{hosts[-16]}' end='{hosts[-1]}'/></dhcp></ip></network>"
            )
            net.create()
        net.update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            dhcp_host_xml("02:00:00:00:00:01", str(hosts[9]), "i-one", 600),
            libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG | libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE,
        )
        assert "dhcp-lease-max=16" in (DNSMASQ_DIR / f"{name}.conf").read_text()
        bridge_before = run("ip", "-o", "link", "show", bridge).split(":")[0]

        # when: `make run` prepares the host again
        plan = localhost.prepare(URI, pool=name, pool_dir=tmp_path / "pool", network=name, bridge=bridge)

        # then: dnsmasq restarted static-only with the entry, on the same bridge (its guests
        # stay connected), and the pool is the one the host was registered with
        config = (DNSMASQ_DIR / f"{name}.conf").read_text()
        assert f"dhcp-range={hosts[0]},static" in config and "dhcp-lease-max" not in config
        assert "02:00:00:00:00:01" in (DNSMASQ_DIR / f"{name}.hostsfile").read_text()
        assert run("ip", "-o", "link", "show", bridge).split(":")[0] == bridge_before
        assert (plan["pool_first"], plan["pool_last"]) == (str(hosts[9]), str(hosts[-17]))
    finally:
        localhost.remove(hypervisor, pool=name, network=name)
