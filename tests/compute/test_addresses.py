"""One truth for addresses: what the API returns is what the host's DHCP server gives the guest.

On libvirt's test driver; tests/e2e/test_address_churn.py shows the same with real guests.
"""

import ipaddress
from datetime import timedelta

import libvirt
import time_machine
from django.utils import timezone

from compute import operations, services
from compute.drivers.libvirt import connect
from compute.drivers.libvirt_xml import dhcp_host_xml, dhcp_hosts_of
from compute.models import IpAllocation, IpPool
from compute.sizing import Size
from tests.conftest import actor


def create(alice, tenant_a, image, flavor, name):
    request = services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    return services.instance_create(actor=actor(alice, tenant_a), request=request)


def delete(alice, tenant_a, instance):
    services.instance_delete(actor=actor(alice, tenant_a), instance=instance)
    assert operations.delete(instance.pk) == "deleted"


def test_it_rests_a_deleted_instances_address_until_the_dhcp_lease_is_surely_gone(
    db, host, alice, tenant_a, image, flavor, settings
):
    # given: an instance deleted a moment ago
    first = create(alice, tenant_a, image, flavor, "first")
    delete(alice, tenant_a, first)

    # when: the next instance is created at once
    second = create(alice, tenant_a, image, flavor, "second")

    # then: it gets another address: the DHCP server still keeps the old guest's lease
    assert second.ip_address != first.ip_address
    resting = IpAllocation.objects.get(address=first.ip_address)
    assert resting.instance is None and resting.released_at is not None

    # and once a whole lease (and a margin) has passed, the address is given out again
    later = timezone.now() + timedelta(seconds=settings.IP_REST_SECONDS + 1)
    with time_machine.travel(later, tick=False):
        third = create(alice, tenant_a, image, flavor, "third")
    assert third.ip_address == first.ip_address
    assert IpAllocation.objects.get(address=first.ip_address).instance_id == third.pk


def test_it_replaces_a_leftover_dhcp_entry_that_holds_the_address(db, host, alice, tenant_a, image, flavor):
    # given: a DHCP entry for the next free address, left by an instance whose delete never ran
    instance = create(alice, tenant_a, image, flavor, "web")
    net = connect(host.uri).networkLookupByName(host.network)
    net.update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        -1,
        dhcp_host_xml("02:aa:bb:cc:dd:ee", instance.ip_address, "i-stale"),
        libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG | libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE,
    )

    # when
    assert operations.provision(instance.pk) == "running"

    # then: the address belongs to this instance's MAC alone
    entries = [e for e in dhcp_hosts_of(net.XMLDesc(0)) if e["ip"] == instance.ip_address]
    assert [e["mac"] for e in entries] == [instance.mac_address]


def test_it_writes_dhcp_entries_with_a_bounded_lease(db, host, alice, tenant_a, image, flavor, settings):
    instance = create(alice, tenant_a, image, flavor, "web")
    operations.provision(instance.pk)
    xml = connect(host.uri).networkLookupByName(host.network).XMLDesc(0)
    assert f"<lease expiry='{settings.DHCP_LEASE_SECONDS}' unit='seconds'/>" in xml


def test_it_gives_the_lowest_address_that_is_neither_held_resting_nor_a_gateway(
    db, host, alice, tenant_a, image, flavor, settings
):
    # given: a pool of five addresses with its gateway among them; the first held by an
    # instance, the second resting, and the fourth's rest over
    pool = IpPool.objects.get(host=host)
    net = ipaddress.ip_network(pool.cidr)
    a = [str(net.network_address + n) for n in range(10, 15)]
    IpPool.objects.filter(pk=pool.pk).update(first=a[0], last=a[4], gateway=a[2])
    pool.refresh_from_db()
    holder = create(alice, tenant_a, image, flavor, "holder")
    assert holder.ip_address == a[0]
    IpAllocation.objects.create(pool=pool, address=a[1], released_at=timezone.now())
    long_ago = timezone.now() - timedelta(seconds=settings.IP_REST_SECONDS + 60)
    IpAllocation.objects.create(pool=pool, address=a[3], released_at=long_ago)

    # when / then: the fourth (the third is the gateway), its old row cleared for the new one
    assert services._free_address(pool) == a[3]
    assert not IpAllocation.objects.filter(address=a[3]).exists()
    # and once it and the last are held, none is left
    IpAllocation.objects.create(pool=pool, address=a[3], instance=holder)
    assert services._free_address(pool) == a[4]
    IpAllocation.objects.create(pool=pool, address=a[4], instance=holder)
    assert services._free_address(pool) is None
