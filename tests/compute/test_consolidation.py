"""The consolidation planner on simulated hosts: which instances move where, which hosts end up
empty, within the overcommit; a running instance only within its segment; and carrying out an
approved plan, which refuses a plan that went stale."""

from __future__ import annotations

import pytest

from compute import consolidation, services
from compute.hosts import host_register
from compute.models import Flavor, Host, Instance
from compute.sizing import Size
from tests.conftest import RUN_ID, actor, client_for
from tests.simulated import write_host


@pytest.fixture
def rack(db, tmp_path):
    """Three hosts of one segment, 4 vCPUs and 4 GiB each (no overcommit of memory)."""
    return [
        host_register(segment="rack", **write_host(tmp_path, name=f"r{n}-{RUN_ID}", subnet=90, cpus=4, memory_mb=4096))
        for n in (1, 2, 3)
    ]


@pytest.fixture
def gib(db) -> Flavor:
    return Flavor.objects.create(name="m.1g", vcpus=1, memory_mb=1024, disk_gb=1, bandwidth_mbit=1, traffic_gb=1)


def put(who, host, image, flavor, name, hosts) -> Instance:
    """An instance built on `host` (the others disabled meanwhile)."""
    Host.objects.filter(pk__in=[h.pk for h in hosts]).exclude(pk=host.pk).update(status=Host.Status.DISABLED)
    request = services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    try:
        return services.instance_create(actor=who, request=request)
    finally:
        Host.objects.filter(pk__in=[h.pk for h in hosts]).update(status=Host.Status.UP)


def test_it_plans_to_empty_the_least_loaded_hosts(eager, alice, tenant_a, rack, image, gib):
    first, second, third = rack
    who = actor(alice, tenant_a)
    # given: 2 GiB used on the first, 1 on the second, 1 on the third
    for n, host in enumerate([first, first, second, third]):
        put(who, host, image, gib, f"vm-{n}", rack)

    # when
    plan = consolidation.plan()

    # then: the second and third are emptied into the first (best fit: the fullest with room),
    # which then holds all four within its 4 GiB
    assert plan.emptied == [second.name, third.name]
    assert {(m.source, m.target_name) for m in plan.moves} == {(second.name, first.name), (third.name, first.name)}
    assert (plan.hosts_in_use_before, plan.hosts_in_use_after) == (3, 1)
    assert all(m.live for m in plan.moves)  # they run: live moves, within their segment


def test_it_never_overfills_a_host_and_keeps_running_instances_in_their_segment(
    eager, alice, tenant_a, rack, image, gib, simulated_host
):
    first, second, _third = rack
    who = actor(alice, tenant_a)
    big = Flavor.objects.create(name="m.3g", vcpus=1, memory_mb=3072, disk_gb=1, bandwidth_mbit=1, traffic_gb=1)
    put(who, first, image, big, "big-1", rack)
    put(who, second, image, big, "big-2", rack)
    # a host of no segment, empty and roomy, takes no running instance
    loner = simulated_host(cpus=16, memory_mb=65536)

    plan = consolidation.plan()

    # 3 GiB + 3 GiB do not fit in 4 GiB, and the roomy host is of another segment
    assert plan.moves == [] and plan.emptied == []
    assert loner.name not in {m.target_name for m in plan.moves}


def test_it_carries_out_an_approved_plan_and_refuses_a_stale_one(eager, operator, alice, tenant_a, rack, image, gib):
    first, second, third = rack
    who = actor(alice, tenant_a)
    for n, host in enumerate([first, first, second]):
        instance = put(who, host, image, gib, f"vm-{n}", rack)
        services.instance_stop(actor=who, instance=Instance.objects.get(pk=instance.pk))  # cold moves
    client = client_for(operator)
    planned = client.get("/api/v1/admin/consolidation").json()
    assert planned["emptied"] == [second.name]

    # a plan that no longer holds is refused: the hosts changed since
    late = put(who, third, image, gib, "late", rack)
    services.instance_stop(actor=who, instance=Instance.objects.get(pk=late.pk))
    assert client.post("/api/v1/admin/consolidation", {"token": planned["token"]}, format="json").status_code == 409

    # the new plan, approved, is carried out
    planned = client.get("/api/v1/admin/consolidation").json()
    response = client.post("/api/v1/admin/consolidation", {"token": planned["token"]}, format="json")
    assert response.status_code == 202, response.json()
    moved = {m["instance"] for m in planned["moves"]}
    assert all(o["started"] for o in response.json()["outcomes"])
    emptied = Host.objects.filter(name__in=planned["emptied"])
    assert not Instance.objects.filter(host__in=emptied).exclude(state="deleted").exists()
    assert Instance.objects.filter(pk__in=moved, state="stopped").count() == len(moved)
    # a forged token is a 400 naming it; tenants cannot plan
    response = client.post("/api/v1/admin/consolidation", {"token": "forged"}, format="json")
    assert response.status_code == 400 and "token" in response.json()["fields"]
    assert client_for(alice).get("/api/v1/admin/consolidation").status_code == 403
