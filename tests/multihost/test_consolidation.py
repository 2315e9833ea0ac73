"""A consolidation plan carried out on two real hosts of one segment: one running guest on each;
the plan empties one host by moving its guest live onto the other; approved, the guest moves
without a reboot and keeps its address, and the emptied host holds nothing."""

from __future__ import annotations

import time

import libvirt
import pytest

from compute.models import Instance
from tests.conftest import client_for
from tests.e2e.test_real_vm import boot_count
from tests.multihost.conftest import LEASE_SECONDS
from tests.multihost.test_migration import held, join_segment, running_on_first, settled, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_an_approved_plan_empties_a_real_host(
    namespaced_libvirtd, portal_hosts, host_worker, tiny_image, tiny_flavor, operator, alice, tenant_a
):
    # given: a running guest on each of two hosts of one segment
    first_ns, second_ns, first, second = join_segment(namespaced_libvirtd, portal_hosts)
    if not (first_ns.forwards() and second_ns.forwards()):
        pytest.skip("MULTI-HOST CONSOLIDATION SKIPPED: IPv4 forwarding could not be switched on for the hosts' veths")
    for host in (first, second):
        host_worker(host.queue, {"LEASE_SECONDS": LEASE_SECONDS, "INSTANCE_STOP_TIMEOUT": "20"})
    api = client_for(alice)
    one, _ = running_on_first(api, first, second, tiny_image, tiny_flavor, "one")
    two, _ = running_on_first(api, second, first, tiny_image, tiny_flavor, "two")
    addresses = dict(Instance.objects.filter(pk__in=[one, two]).values_list("id", "ip_address"))
    ops = client_for(operator)

    # when: the operator reads the plan, then approves it
    plan = ops.get("/api/v1/admin/consolidation").json()
    assert (plan["hosts_in_use_before"], plan["hosts_in_use_after"]) == (2, 1), plan
    (move,) = plan["moves"]
    assert move["live"] and plan["emptied"] == [move["source"]]
    began = time.monotonic()
    response = ops.post("/api/v1/admin/consolidation", {"token": plan["token"]}, format="json")
    assert response.status_code == 202, response.json()

    # then: the guest runs on the other host, never rebooted, at its address; the emptied host
    # holds nothing
    moved = settled(api, move["instance"], "running")
    print(f"\nMULTI-HOST consolidation (one live move): {time.monotonic() - began:.1f} s")
    emptied, kept = (first, second) if move["source"] == first.name else (second, first)
    assert set(Instance.objects.filter(pk__in=[one, two]).values_list("host_id", flat=True)) == {kept.pk}
    assert moved["ip_address"] == addresses[Instance.objects.get(pk=move["instance"]).pk]
    conn = libvirt.open(kept.uri)
    try:
        assert boot_count(conn, move["instance"]) == 1
    finally:
        conn.close()
    # the source's clean-up runs just after the switch that settled the state
    assert wait_until("the host emptied", lambda: held(emptied.uri, move["instance"]) == ([], []), within=60)
    kept_ns = first_ns if kept == first else second_ns
    assert wait_until("the moved guest", lambda: kept_ns.guest_answers(moved["ip_address"]), within=60)

    for uuid in (one, two):
        assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
        settled(api, uuid, "deleted")
