"""Cold migration between two real libvirt hosts, each a libvirtd of the test's own in its own
namespaces, registered through the operator API and served by its own worker: a tiny guest
that booted once on the first host is stopped, moved through the operator API, and boots on
the second from the same disk (its on-disk boot counter goes on from 1 to 2), at an address of
the second host's network; nothing of it is left on the first."""

from __future__ import annotations

import re
import time
from pathlib import Path

import libvirt
import pytest

from compute.drivers import libvirt_xml as lx
from compute.models import Host, Instance
from tests.conftest import RUN_ID, client_for
from tests.e2e.test_real_vm import boot_count
from tests.multihost.conftest import BRIDGE, LEASE_SECONDS

pytestmark = [pytest.mark.e2e, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
SETTLE_WITHIN = 240.0  # two cores, shared with other suites' guests


def wait_until(what: str, check, within: float = SETTLE_WITHIN, every: float = 0.5):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within} s")


def settled(api, instance_id: str, wanted: str) -> dict:
    def check():
        body = api.get(f"/api/v1/instances/{instance_id}").json()
        assert body["state"] != "error", body
        return body if body["state"] == wanted else None

    return wait_until(f"state {wanted}", check)


def boot_lines(api, instance_id: str) -> list[tuple[int, str]]:
    """(boot count, address) of each boot the console log shows: the tiny image prints both."""
    log = api.get(f"/api/v1/instances/{instance_id}/console-log", {"max_kib": 256}).json()["log"]
    return [(int(n), ip) for n, ip in re.findall(r"TINY-IMAGE boot=(\d+) ip=([0-9.]+)", log)]


def held(uri: str, uuid: str) -> tuple[list[str], list[str]]:
    """Domains and volumes of the instance on a host (on a connection of its own)."""
    conn = libvirt.open(uri)
    try:
        domains = [d.name() for d in conn.listAllDomains(0) if d.UUIDString() == uuid]
        volumes = []
        for pool in conn.listAllStoragePools(0):
            pool.refresh(0)
            volumes += [v for v in pool.listVolumes() if uuid in v]
        return domains, sorted(volumes)
    finally:
        conn.close()


def test_it_moves_a_stopped_guest_to_another_real_host_with_its_disk(
    namespaced_libvirtd, portal_hosts, host_worker, tiny_image, tiny_flavor, operator, alice, tenant_a
):
    # given: two real hosts with a worker each, and a guest on the first that booted once
    first = portal_hosts(namespaced_libvirtd())
    second = portal_hosts(namespaced_libvirtd())
    for host in (first, second):
        host_worker(host.queue, {"LEASE_SECONDS": LEASE_SECONDS, "INSTANCE_STOP_TIMEOUT": "20"})
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)  # the build lands on the first
    api = client_for(alice)
    body = {"name": "mover", "image": str(tiny_image.pk), "flavor": str(tiny_flavor.pk)}
    response = api.post("/api/v1/instances", body, format="json")
    assert response.status_code == 202, response.json()
    uuid = response.json()["id"]
    settled(api, uuid, "running")
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)
    old_ip = Instance.objects.get(pk=uuid).ip_address
    assert wait_until("the first boot", lambda: boot_lines(api, uuid))[0] == (1, old_ip)
    assert api.post(f"/api/v1/instances/{uuid}/stop").status_code == 202
    settled(api, uuid, "stopped")

    # when: an operator moves it to the second host
    began = time.monotonic()
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{uuid}/migrate", {"host": str(second.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    moved = settled(api, uuid, "stopped")
    print(f"\nMULTI-HOST cold migration: {time.monotonic() - began:.1f} s")

    # then: it is on the second host, and nothing of it is left on the first
    instance = Instance.objects.select_related("host").get(pk=uuid)
    assert instance.host_id == second.pk
    # (the source's clean-up runs just after the switch that settles the state)
    assert wait_until("the first host emptied", lambda: held(first.uri, uuid) == ([], []), within=60)
    domains, volumes = held(second.uri, uuid)
    assert domains == [f"inst-{uuid}"] and f"inst-{uuid}-disk.qcow2" in volumes

    # when: started there, it boots from the disk it had (the boot counter on it goes on), at
    # the address the portal gave it on the second host's network
    assert api.post(f"/api/v1/instances/{uuid}/start").status_code == 202
    settled(api, uuid, "running")
    boots = wait_until("the boot on the second host", lambda: [b for b in boot_lines(api, uuid) if b[0] == 2])
    assert boots == [(2, moved["ip_address"])]

    assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    settled(api, uuid, "deleted")
    assert held(second.uri, uuid) == ([], [])


def join_segment(namespaced_libvirtd, portal_hosts, shared_dir: Path | None = None) -> tuple:
    """Two real hosts of one segment, their guest bridges joined by a veth pair (one L2 network:
    each host's dnsmasq answers only its own guests, the gateways are .1 and .2); `shared_dir`:
    both mount it as their shared pool."""
    first_ns, second_ns = namespaced_libvirtd(), namespaced_libvirtd()
    segment = f"seg-{RUN_ID}"
    first = portal_hosts(first_ns, segment=segment, gateway_index=0, shared_dir=shared_dir)
    second = portal_hosts(second_ns, segment=segment, gateway_index=1, shared_dir=shared_dir)
    near, far = f"sg{RUN_ID[:6]}a", f"sg{RUN_ID[:6]}b"
    joined = first_ns.in_namespace(
        "ip", "link", "add", near, "type", "veth", "peer", "name", far, "netns", second_ns.name
    )
    assert joined.returncode == 0, joined.stderr
    for ns, end in ((first_ns, near), (second_ns, far)):
        done = ns.in_namespace("ip", "link", "set", end, "master", BRIDGE, "up")
        assert done.returncode == 0, done.stderr
    return first_ns, second_ns, first, second


def running_on_first(api, first, second, tiny_image, tiny_flavor, name: str) -> tuple[str, str]:
    """A guest built on the first host, booted once; its id and address."""
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)
    body = {"name": name, "image": str(tiny_image.pk), "flavor": str(tiny_flavor.pk)}
    response = api.post("/api/v1/instances", body, format="json")
    assert response.status_code == 202, response.json()
    uuid = response.json()["id"]
    settled(api, uuid, "running")
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)
    address = Instance.objects.get(pk=uuid).ip_address
    assert wait_until("the first boot", lambda: boot_lines(api, uuid))[0] == (1, address)
    return uuid, address


def test_it_keeps_the_address_between_hosts_of_one_segment(
    namespaced_libvirtd, portal_hosts, host_worker, tiny_image, tiny_flavor, operator, alice, tenant_a
):
    # given: a guest on the first host of a segment, seen from the second host's side
    first_ns, second_ns, first, second = join_segment(namespaced_libvirtd, portal_hosts)
    for host in (first, second):
        host_worker(host.queue, {"LEASE_SECONDS": LEASE_SECONDS, "INSTANCE_STOP_TIMEOUT": "20"})
    api = client_for(alice)
    uuid, address = running_on_first(api, first, second, tiny_image, tiny_flavor, "stayer")
    assert wait_until("the guest seen from the second host", lambda: second_ns.guest_answers(address), within=60)
    assert api.post(f"/api/v1/instances/{uuid}/stop").status_code == 202
    settled(api, uuid, "stopped")

    # when
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{uuid}/migrate", {"host": str(second.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    moved = settled(api, uuid, "stopped")

    # then: the same address, leased from the second host's DHCP server after the move
    assert moved["ip_address"] == address
    assert Instance.objects.get(pk=uuid).host_id == second.pk
    assert api.post(f"/api/v1/instances/{uuid}/start").status_code == 202
    settled(api, uuid, "running")
    boots = wait_until("the boot on the second host", lambda: [b for b in boot_lines(api, uuid) if b[0] == 2])
    assert boots == [(2, address)]
    assert wait_until("the guest seen from the first host", lambda: first_ns.guest_answers(address), within=60)

    assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    settled(api, uuid, "deleted")


def test_it_moves_a_running_guest_live_between_hosts_of_one_segment(
    namespaced_libvirtd, portal_hosts, host_worker, tiny_image, tiny_flavor, operator, alice, tenant_a
):
    # given: a running guest on the first host of a segment
    first_ns, second_ns, first, second = join_segment(namespaced_libvirtd, portal_hosts)
    if not (first_ns.forwards() and second_ns.forwards()):
        pytest.skip("MULTI-HOST LIVE MIGRATION SKIPPED: IPv4 forwarding could not be switched on for the hosts' veths")
    for host in (first, second):
        host_worker(host.queue, {"LEASE_SECONDS": LEASE_SECONDS, "INSTANCE_STOP_TIMEOUT": "20"})
    api = client_for(alice)
    uuid, address = running_on_first(api, first, second, tiny_image, tiny_flavor, "live")

    # when: an operator moves it while it runs
    began = time.monotonic()
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{uuid}/migrate", {"host": str(second.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    moved = settled(api, uuid, "running")
    print(f"\nMULTI-HOST live migration: {time.monotonic() - began:.1f} s")

    # then: it runs on the second host, never rebooted, at the same address, and nothing of it
    # is left on the first
    instance = Instance.objects.get(pk=uuid)
    assert (instance.host_id, moved["ip_address"]) == (second.pk, address)
    conn = libvirt.open(second.uri)
    try:
        assert boot_count(conn, uuid) == 1
        assert lx.vnc_port_of(conn.lookupByUUIDString(uuid).XMLDesc(0)) == instance.vnc_port
    finally:
        conn.close()
    assert wait_until("the first host emptied", lambda: held(first.uri, uuid) == ([], []), within=60)
    assert wait_until("the guest seen from the first host", lambda: first_ns.guest_answers(address), within=60)
    # the console follows it: a new console token is given for the new host
    assert api.post(f"/api/v1/instances/{uuid}/console").status_code == 201
    steps = list(instance.actions.filter(action="migrate").exclude(step="").values_list("step", "status"))
    assert [s for s, _ in steps] == ["prepare", "seed", "dhcp", "firewall", "migrate", "switch", "cleanup"]

    assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    settled(api, uuid, "deleted")


def test_it_drains_a_host_of_a_segment(
    namespaced_libvirtd, portal_hosts, host_worker, tiny_image, tiny_flavor, operator, alice, tenant_a
):
    # given: on the first host of a segment, a running guest and a stopped one
    first_ns, second_ns, first, second = join_segment(namespaced_libvirtd, portal_hosts)
    if not (first_ns.forwards() and second_ns.forwards()):
        pytest.skip("MULTI-HOST DRAIN SKIPPED: IPv4 forwarding could not be switched on for the hosts' veths")
    for host in (first, second):
        host_worker(host.queue, {"LEASE_SECONDS": LEASE_SECONDS, "INSTANCE_STOP_TIMEOUT": "20"})
    api = client_for(alice)
    running, address = running_on_first(api, first, second, tiny_image, tiny_flavor, "runner")
    stopped, _ = running_on_first(api, first, second, tiny_image, tiny_flavor, "sleeper")
    assert api.post(f"/api/v1/instances/{stopped}/stop").status_code == 202
    settled(api, stopped, "stopped")

    # when
    response = client_for(operator).post(f"/api/v1/admin/hosts/{first.pk}/drain")

    # then: both move off (live and cold), the host is in maintenance and holds nothing
    assert response.status_code == 202, response.json()
    assert sorted(m["name"] for m in response.json()["moving"]) == ["runner", "sleeper"]
    settled(api, running, "running")
    settled(api, stopped, "stopped")
    assert set(Instance.objects.filter(pk__in=[running, stopped]).values_list("host_id", flat=True)) == {second.pk}
    for uuid in (running, stopped):  # each source's clean-up runs just after its switch
        assert wait_until("the first host emptied", lambda u=uuid: held(first.uri, u) == ([], []), within=60)
    assert Host.objects.get(pk=first.pk).status == Host.Status.DISABLED
    assert wait_until("the running guest after the drain", lambda: second_ns.guest_answers(address), within=60)

    # and: undrained, it takes new instances again
    response = client_for(operator).post(f"/api/v1/admin/hosts/{first.pk}/undrain")
    assert response.status_code == 200 and response.json()["status"] == "up"
    for uuid in (running, stopped):
        assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
        settled(api, uuid, "deleted")
