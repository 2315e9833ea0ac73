"""The address the API returns is the guest's, even right after a delete and a create.

Real guests on the real libvirtd: dnsmasq keeps a deleted guest's lease until it expires, so
an address handed straight to the next instance would reach that guest as some other
address. Each round deletes the previous guest and creates the next at once; the lease the
new guest actually holds must be the address the API gave it.
"""

from __future__ import annotations

import time

import libvirt
import pytest

from compute.models import Flavor
from tests.conftest import client_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ROUNDS = 10


def wait_for(what: str, check, within: float, every: float = 0.3):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within} s")


def leased(network: libvirt.virNetwork, mac: str) -> str | None:
    for lease in network.DHCPLeases():
        if lease["mac"].lower() == mac.lower():
            return lease["ipaddr"]
    return None


def test_every_guest_holds_the_address_the_api_returned_through_delete_and_create(
    start_worker, hypervisor, real_host, tiny_image, alice, tenant_a
):
    flavor = Flavor.objects.create(name="f1.churn", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=10, traffic_gb=1)
    start_worker(real_host.queue, threads=2)
    api = client_for(alice)
    network = hypervisor.networkLookupByName(real_host.network)
    previous = None
    seen = []
    for n in range(ROUNDS + 1):
        if previous is not None:
            assert api.delete(f"/api/v1/instances/{previous['id']}").status_code == 202
        response = api.post(
            "/api/v1/instances",
            {"name": f"churn-{n}", "image": str(tiny_image.pk), "flavor": str(flavor.pk)},
            format="json",
        )
        assert response.status_code == 202, response.json()
        created = response.json()
        wait_for(
            f"{created['name']} running",
            lambda c=created: api.get(f"/api/v1/instances/{c['id']}").json()["state"] == "running",
            90,
        )
        body = api.get(f"/api/v1/instances/{created['id']}").json()
        address = wait_for(f"a lease for {body['name']}", lambda b=body: leased(network, b["mac_address"]), 120)
        assert address == created["ip_address"] == body["ip_address"], (n, address, created["ip_address"])
        seen.append(address)
        previous = created
    api.delete(f"/api/v1/instances/{previous['id']}")
    wait_for("the last delete", lambda: api.get(f"/api/v1/instances/{previous['id']}").json()["state"] == "deleted", 60)
    assert len(set(seen)) == ROUNDS + 1  # no address handed out again while its lease could live
