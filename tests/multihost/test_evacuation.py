"""A real host dies: two libvirtds of the test's own, one segment, their shared pools on one
directory (the stand-in for NFS), a worker each. The first host runs an HA guest (its disk in
the shared pool) and a guest with a local disk. Its worker is killed and its libvirtd stopped,
by their PIDs; beat's check, called here as beat would, declares it down and fences it
(second-host.sh's `fence`: every QEMU of that host killed by its PID, what a power-off does).
The HA guest boots on the second host from the same disk, at the same address; the other is
host_down. When the first host comes back, the stale copy is removed there, the other guest
starts again where it was, and no guest runs on two hosts."""

from __future__ import annotations

import time

import libvirt
import pytest

from billing.sla import availability
from compute import tasks
from compute.models import Flavor, Host, Instance, InstanceStateLog
from tests.conftest import client_for
from tests.multihost.conftest import LEASE_SECONDS
from tests.multihost.hosts import SCRIPT
from tests.multihost.test_migration import boot_lines, held, join_segment, running_on_first, settled, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
DOWN_AFTER = 3  # seconds of silence before a host is judged (HOST_DOWN_AFTER_SECONDS)
WORKER_ENV = {"LEASE_SECONDS": LEASE_SECONDS, "INSTANCE_STOP_TIMEOUT": "20"}


def running_on(uri: str, uuid: str) -> bool:
    conn = libvirt.open(uri)
    try:
        return any(d.UUIDString() == uuid and d.isActive() for d in conn.listAllDomains(0))
    finally:
        conn.close()


def beat(settings) -> dict:
    """What beat's check_hosts does, after the silence it needs to judge a host."""
    tasks.check_hosts.apply()  # asks every host for a heartbeat
    time.sleep(DOWN_AFTER + 1)
    return tasks.check_hosts.apply().get()


def test_a_dead_host_restarts_its_ha_guest_elsewhere_and_gets_the_other_back(
    settings, namespaced_libvirtd, portal_hosts, host_worker, shared_dir, tiny_image, tiny_flavor, alice, tenant_a
):
    settings.HOST_DOWN_AFTER_SECONDS = DOWN_AFTER
    settings.HYPERVISOR_PROBE_SECONDS = 5
    settings.HOST_FENCE_COMMAND = ["bash", str(SCRIPT), "fence", "{host}"]
    # given: two hosts of one segment sharing a directory, an HA guest and a local one on the first
    first_ns, second_ns, first, second = join_segment(namespaced_libvirtd, portal_hosts, shared_dir)
    workers = {host.pk: host_worker(host.queue, WORKER_ENV) for host in (first, second)}
    ha_flavor = Flavor.objects.create(
        name="f1.tiny-ha", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=10, traffic_gb=1, ha=True
    )
    api = client_for(alice)
    ha, address = running_on_first(api, first, second, tiny_image, ha_flavor, "db")
    local, _ = running_on_first(api, first, second, tiny_image, tiny_flavor, "web")
    assert Instance.objects.get(pk=ha).shared_disk and not Instance.objects.get(pk=local).shared_disk

    # when: the first host dies (its worker and its libvirtd stopped by their PIDs; its guests
    # run on, as they would on a host cut off from the network) and beat judges it
    workers[first.pk].process.kill()
    workers[first.pk].process.wait(timeout=10)
    first_ns.stop_libvirtd(kill=True)
    began = time.monotonic()
    report = beat(settings)

    # then: it is down and fenced, the HA guest boots on the second host from the same disk
    # (its on-disk boot counter goes on from 1 to 2) at the same address; the other waits
    assert report["marked_down"] == [first.name], report
    assert report["evacuated"] == {first.name: {"restarting": [f"{ha} -> {second.name}"], "host_down": [local]}}
    assert Host.objects.get(pk=first.pk).fenced_at is not None
    moved = settled(api, ha, "running")
    print(f"\nMULTI-HOST HA restart: {time.monotonic() - began:.1f} s from the first judgement to running")
    assert (moved["ip_address"], Instance.objects.get(pk=ha).host_id) == (address, second.pk)
    boots = wait_until("the boot on the second host", lambda: [b for b in boot_lines(api, ha) if b[0] == 2])
    assert boots == [(2, address)]
    assert wait_until("the HA guest seen from the second host", lambda: second_ns.guest_answers(address), within=60)
    assert api.get(f"/api/v1/instances/{local}").json()["state"] == "host_down"

    # when: the first host comes back (its libvirtd and worker started again)
    first_ns.start_libvirtd()
    host_worker(first.queue, WORKER_ENV)
    tasks.check_hosts.apply()  # its heartbeat brings it back, and it reclaims first

    # then: the local guest starts again where it was (fenced, it had died), the stale copy of
    # the HA guest is gone from the first host, and no guest runs on two hosts
    settled(api, local, "running")
    assert Host.objects.get(pk=first.pk).status == Host.Status.UP
    assert wait_until("the stale copy gone", lambda: held(first.uri, ha)[0] == [], within=60)
    assert (running_on(first.uri, ha), running_on(second.uri, ha)) == (False, True)
    assert (running_on(first.uri, local), running_on(second.uri, local)) == (True, False)

    # and: the HA guest's downtime counted once, from the judgement until it ran again
    log = {row.state: row.at for row in InstanceStateLog.objects.filter(instance_id=ha).order_by("at")}
    expected = int((log["running"] - log["host_down"]).total_seconds())
    window = (log["host_down"].replace(hour=0, minute=0, second=0, microsecond=0), log["running"].replace(year=2100))
    assert availability(Instance.objects.get(pk=ha), *window).downtime_seconds == expected

    for uuid in (ha, local):
        assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
        settled(api, uuid, "deleted")


def test_a_shared_disk_moves_live_without_a_copy(
    namespaced_libvirtd, portal_hosts, host_worker, shared_dir, tiny_image, operator, alice, tenant_a
):
    # given: an HA guest running on the first of two hosts that share a directory
    first_ns, second_ns, first, second = join_segment(namespaced_libvirtd, portal_hosts, shared_dir)
    if not (first_ns.forwards() and second_ns.forwards()):
        pytest.skip("MULTI-HOST LIVE MIGRATION SKIPPED: IPv4 forwarding could not be switched on for the hosts' veths")
    for host in (first, second):
        # the directory is shared by a bind mount, which libvirt cannot tell from a local disk
        host_worker(host.queue, {**WORKER_ENV, "LIVE_MIGRATION_TRUST_SHARED_POOLS": "1"})
    ha_flavor = Flavor.objects.create(
        name="f1.tiny-ha", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=10, traffic_gb=1, ha=True
    )
    api = client_for(alice)
    uuid, address = running_on_first(api, first, second, tiny_image, ha_flavor, "db")
    disk = shared_dir / f"inst-{uuid}-disk.qcow2"
    inode = disk.stat().st_ino

    # when: an operator moves it live
    began = time.monotonic()
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{uuid}/migrate", {"host": str(second.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    moved = settled(api, uuid, "running")
    print(f"\nMULTI-HOST live migration on shared storage: {time.monotonic() - began:.1f} s")

    # then: it runs on the second host from the very same file (nothing was copied), never
    # rebooted, at its address; the first host holds no domain of it, and the disk stays
    trail = list(Instance.objects.get(pk=uuid).actions.filter(action="migrate").values_list("step", "status", "error"))
    assert (moved["ip_address"], Instance.objects.get(pk=uuid).host_id) == (address, second.pk), trail
    steps = list(
        Instance.objects.get(pk=uuid).actions.filter(action="migrate").exclude(step="").values_list("step", flat=True)
    )
    assert steps == ["disk", "seed", "dhcp", "firewall", "migrate", "switch", "cleanup"]
    assert disk.stat().st_ino == inode
    assert (running_on(first.uri, uuid), running_on(second.uri, uuid)) == (False, True)
    assert wait_until("the first host's domain gone", lambda: held(first.uri, uuid)[0] == [], within=60)
    assert [b for b in boot_lines(api, uuid) if b[0] > 1] == []

    assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    settled(api, uuid, "deleted")
    assert not disk.exists()
