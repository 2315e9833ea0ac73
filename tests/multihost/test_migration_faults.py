"""A live migration whose worker dies while libvirt moves the guest, on two real hosts.

The source host's worker runs the migration; it is killed (SIGKILL, by its own process id)
while libvirt's migration job runs on the source domain, so nobody drives the job any more.
A fresh worker on that queue, once the reaper (called here as beat would call it) finds the
instance held by nobody, must finish the move exactly once: the guest runs on one host only,
never rebooted, at its address, and the host the database names is the one it runs on.
"""

from __future__ import annotations

import libvirt
import pytest

from compute import tasks
from compute.models import Instance, InstanceAction
from tests.conftest import client_for
from tests.e2e.test_real_vm import boot_count
from tests.multihost.conftest import LEASE_SECONDS
from tests.multihost.test_migration import held, join_segment, running_on_first, settled, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
RESUME_WITHIN = 240.0  # two cores, TCG: the copy runs again from the start


def migration_job_running(uri: str, uuid: str) -> bool:
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(uuid)
        return dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def settled_with_reaper(api, instance_id: str, wanted: str) -> dict:
    def check():
        tasks.reap_stalled.apply()  # what beat does every 15 s
        body = api.get(f"/api/v1/instances/{instance_id}").json()
        assert body["state"] != "error", body
        return body if body["state"] == wanted else None

    return wait_until(f"state {wanted}", check, within=RESUME_WITHIN, every=1.0)


def test_a_live_migration_whose_worker_died_mid_copy_finishes_once(
    namespaced_libvirtd, portal_hosts, host_worker, fast_leases, tiny_image, tiny_flavor, operator, alice, tenant_a
):
    # given: a running guest on the first host of a segment, each host with its worker
    first_ns, second_ns, first, second = join_segment(namespaced_libvirtd, portal_hosts)
    if not (first_ns.forwards() and second_ns.forwards()):
        pytest.skip("MULTI-HOST LIVE MIGRATION SKIPPED: IPv4 forwarding could not be switched on for the hosts' veths")
    env = {"LEASE_SECONDS": LEASE_SECONDS, "INSTANCE_STOP_TIMEOUT": "20"}
    doomed = host_worker(first.queue, env)
    host_worker(second.queue, env)
    api = client_for(alice)
    uuid, address = running_on_first(api, first, second, tiny_image, tiny_flavor, "moved-once")

    # when: an operator moves it, and the source's worker is killed while libvirt copies it
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{uuid}/migrate", {"host": str(second.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    wait_until("libvirt's migration job", lambda: migration_job_running(first.uri, uuid), every=0.05)
    doomed.process.kill()
    doomed.process.wait(timeout=10)
    host_worker(first.queue, env)

    # then: the move is resumed and finished, once
    moved = settled_with_reaper(api, uuid, "running")
    instance = Instance.objects.get(pk=uuid)
    assert (instance.host_id, moved["ip_address"]) == (second.pk, address)
    assert InstanceAction.objects.filter(instance=instance, action="migrate", step="resume").exists()
    assert wait_until("the first host emptied", lambda: held(first.uri, uuid) == ([], []), within=60)
    conn = libvirt.open(second.uri)
    try:
        dom = conn.lookupByUUIDString(uuid)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING  # not left paused by the aborted job
        assert boot_count(conn, uuid) == 1  # never rebooted
    finally:
        conn.close()
    assert wait_until("the guest seen from the first host", lambda: first_ns.guest_answers(address), within=60)
    switched = InstanceAction.objects.filter(instance=instance, action="migrate", step="switch", status="done")
    assert switched.count() == 1

    assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    settled(api, uuid, "deleted")
