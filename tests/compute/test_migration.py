"""Cold migration between two simulated hosts: the operator's API, the claims and addresses
that move, what each host holds afterwards, refusals, and a failure that leaves the instance
where it was."""

from __future__ import annotations

import libvirt
import pytest

from compute import operations, services, tasks
from compute.models import Flavor, Host, Instance, IpAllocation
from compute.sizing import Size
from tenants.access import operator_actor
from tests.compute.hypervisor import FaultPlan, faulty_driver, holdings
from tests.conftest import actor, client_for


@pytest.fixture
def two_hosts(simulated_host):
    return simulated_host(), simulated_host()


@pytest.fixture
def stopped(eager, alice, tenant_a, two_hosts, image, flavor) -> Instance:
    """A built instance on the first host, stopped (the builds ran in this process)."""
    first, _second = two_hosts
    Host.objects.filter(pk=_second.pk).update(status=Host.Status.DISABLED)  # the build lands on the first
    request = services.CreateRequest(
        name="web-1", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    services.instance_stop(actor=actor(alice, tenant_a), instance=Instance.objects.get(pk=instance.pk))
    Host.objects.filter(pk=_second.pk).update(status=Host.Status.UP)
    instance = Instance.objects.get(pk=instance.pk)
    assert (instance.state, instance.host_id) == ("stopped", first.pk)
    return instance


def used(host: Host) -> tuple[int, int, int]:
    host.refresh_from_db()
    return host.vcpus_used, host.memory_mb_used, host.disk_gb_used


def test_it_moves_a_stopped_instance_to_another_host(operator, stopped, two_hosts, flavor):
    first, second = two_hosts
    before = holdings(first, stopped)
    assert before.domains and before.dhcp

    # when: an operator moves it to the second host
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{stopped.pk}/migrate", {"host": str(second.pk)}, format="json"
    )

    # then: it is stopped on the second host, at an address of that host's pool, with its steps logged
    assert response.status_code == 202, response.json()
    moved = Instance.objects.get(pk=stopped.pk)
    assert (moved.state, moved.host_id) == ("stopped", second.pk)
    assert IpAllocation.objects.get(instance=moved).pool.host_id == second.pk
    assert moved.ip_address == IpAllocation.objects.get(instance=moved).address
    steps = [a.step for a in moved.actions.filter(action="migrate").exclude(step="")]
    assert steps == ["export", "import", "seed", "dhcp", "firewall", "define", "switch", "cleanup"]
    # the claims moved with it
    size = (flavor.vcpus, flavor.memory_mb, flavor.disk_gb)
    assert used(first) == (0, 0, 0) and used(second) == size
    # the second host holds the domain, its disk (marked whole) and seed, and the DHCP entry;
    # the first holds nothing of it any more
    after = holdings(second, moved)
    assert after.domains == [f"inst-{moved.pk}"]
    assert f"inst-{moved.pk}-disk.qcow2" in after.volumes and f"inst-{moved.pk}-seed.iso" in after.volumes
    assert after.dhcp == [{"mac": moved.mac_address, "ip": moved.ip_address, "name": f"i-{moved.pk.hex}"}]
    gone = holdings(first, moved)
    assert (gone.domains, gone.volumes, gone.dhcp) == ([], [], [])
    # the old address rests before anyone else gets it
    assert IpAllocation.objects.filter(address=stopped.ip_address, instance=None, pool__host=first).exists()

    # and: it starts on its new host
    services.instance_start(actor=None, instance=moved)
    assert holdings(second, moved).active


def test_it_lets_the_scheduler_pick_the_target(operator, stopped, two_hosts):
    response = client_for(operator).post(f"/api/v1/admin/instances/{stopped.pk}/migrate", {}, format="json")

    assert response.status_code == 202, response.json()
    assert Instance.objects.get(pk=stopped.pk).host_id == two_hosts[1].pk
    assert response.json()["host_name"] in (two_hosts[1].name, two_hosts[0].name)


def test_it_refuses_what_cannot_move(operator, alice, tenant_a, stopped, two_hosts, simulated_host):
    first, second = two_hosts
    client = client_for(operator)
    url = f"/api/v1/admin/instances/{stopped.pk}/migrate"
    # the host it is on, and one that does not exist, are 400s naming the host
    for target in (first.pk, "00000000-0000-0000-0000-000000000000"):
        response = client.post(url, {"host": str(target)}, format="json")
        assert response.status_code == 400 and "host" in response.json()["fields"], response.json()
    # a host that is down or full is a 409
    tiny = simulated_host(cpus=1, memory_mb=128)
    assert client.post(url, {"host": str(tiny.pk)}, format="json").status_code == 409
    # a running instance is a 409 (cold migration only)
    services.instance_start(actor=None, instance=stopped)
    assert client.post(url, {"host": str(second.pk)}, format="json").status_code == 409
    # the tenant itself cannot migrate, and is not offered it
    assert client_for(alice).post(url, {"host": str(second.pk)}, format="json").status_code == 403
    assert "migrate" not in client_for(alice).get(f"/api/v1/instances/{stopped.pk}").json()["allowed_actions"]
    # nothing moved, nothing claimed
    assert Instance.objects.get(pk=stopped.pk).host_id == first.pk
    assert used(second) == (0, 0, 0) and used(tiny) == (0, 0, 0)


def test_it_leaves_the_instance_where_it_was_when_the_copy_fails(
    operator, stopped, two_hosts, use_driver, flavor, tenant_a
):
    first, second = two_hosts
    # given: every volume creation fails with a hard error (the target's import among them)
    plan = FaultPlan("storagePoolLookupByName", libvirt.VIR_ERR_INTERNAL_ERROR, times=10**6)
    use_driver(faulty_driver(plan))

    # when
    from compute import migration

    migration.instance_migrate(actor=operator_actor(operator, tenant_a), instance=stopped, host_id=str(second.pk))

    # then: stopped on the first host, the target's claim and address given back
    instance = Instance.objects.get(pk=stopped.pk)
    assert (instance.state, instance.host_id, instance.ip_address) == ("stopped", first.pk, stopped.ip_address)
    assert used(second) == (0, 0, 0)
    assert used(first) == (flavor.vcpus, flavor.memory_mb, flavor.disk_gb)
    assert list(IpAllocation.objects.filter(instance=instance).values_list("pool__host_id", flat=True)) == [first.pk]
    failed = instance.actions.filter(action="migrate", status="failed").first()
    assert failed is not None and failed.step == "export"


def test_it_resumes_a_migration_after_a_dead_worker(stopped, two_hosts, operator, tenant_a, settings):
    first, second = two_hosts
    from compute import migration

    settings.CELERY_TASK_ALWAYS_EAGER = False
    # given: the migration was accepted but its task never ran (the worker died with it)
    from celery import current_app

    current_app.conf.task_always_eager = False
    try:
        migration.instance_migrate(actor=operator_actor(operator, tenant_a), instance=stopped, host_id=str(second.pk))
    finally:
        current_app.conf.task_always_eager = True
    assert Instance.objects.get(pk=stopped.pk).state == "migrating"

    # when: the reaper's task for the state runs it (twice: idempotent)
    assert tasks.TASK_FOR_STATE["migrating"] is tasks.migrate
    assert operations.migrate(str(stopped.pk)) == "migrated"
    assert operations.migrate(str(stopped.pk)) == "skipped"

    # then
    assert Instance.objects.get(pk=stopped.pk).host_id == second.pk


@pytest.fixture
def segment_hosts(db, tmp_path):
    """Two simulated hosts on one segment: one subnet, one address space."""
    from compute.hosts import host_register
    from tests.conftest import RUN_ID
    from tests.simulated import write_host

    return [host_register(segment="rack-1", **write_host(tmp_path, name=f"seg{n}-{RUN_ID}", subnet=77)) for n in (1, 2)]


def test_it_keeps_the_address_between_hosts_of_one_segment(eager, operator, alice, tenant_a, segment_hosts, image):
    first, second = segment_hosts
    flavor = Flavor.objects.create(name="seg.tiny", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=1, traffic_gb=1)
    who = actor(alice, tenant_a)

    # given: instances spread over both hosts draw from one address space
    made = []
    for n in range(4):
        Host.objects.filter(pk=(second if n % 2 == 0 else first).pk).update(status=Host.Status.DISABLED)
        Host.objects.filter(pk=(first if n % 2 == 0 else second).pk).update(status=Host.Status.UP)
        request = services.CreateRequest(
            name=f"seg-{n}", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
        )
        made.append(services.instance_create(actor=who, request=request))
    Host.objects.update(status=Host.Status.UP)
    assert {i.host_id for i in made} == {first.pk, second.pk}
    assert len({i.ip_address for i in made}) == 4

    # when: one of the first host's moves to the second
    mover = next(i for i in made if i.host_id == first.pk)
    services.instance_stop(actor=who, instance=Instance.objects.get(pk=mover.pk))
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{mover.pk}/migrate", {"host": str(second.pk)}, format="json"
    )

    # then: same address, now of the second host's pool, and its DHCP entry there
    assert response.status_code == 202, response.json()
    moved = Instance.objects.get(pk=mover.pk)
    assert (moved.host_id, moved.ip_address) == (second.pk, mover.ip_address)
    assert [(a.pool.host_id, a.address) for a in IpAllocation.objects.filter(instance=moved)] == [
        (second.pk, mover.ip_address)
    ]
    assert holdings(second, moved).dhcp[0]["ip"] == mover.ip_address
    assert holdings(first, moved).dhcp == []


def test_it_refuses_a_host_on_another_subnet_into_a_segment(db, tmp_path, segment_hosts):
    from base.errors import Invalid
    from compute.hosts import host_register
    from tests.simulated import write_host

    with pytest.raises(Invalid) as refused:
        host_register(segment="rack-1", **write_host(tmp_path, name="seg-odd", subnet=78))
    assert refused.value.field == "segment"


def test_it_leaves_a_running_instance_where_it_was_when_a_live_migration_fails(
    eager, operator, alice, tenant_a, segment_hosts, image
):
    # given: a running instance on the first host of a segment (libvirt's test driver cannot
    # migrate a domain, nor has an address to: the migration step fails, as a real one can)
    first, second = segment_hosts
    flavor = Flavor.objects.create(name="seg.live", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=1, traffic_gb=1)
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)
    request = services.CreateRequest(
        name="live", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)

    # when
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{instance.pk}/migrate", {"host": str(second.pk)}, format="json"
    )

    # then: still running on the first host, the second's claim given back, the failure logged
    assert response.status_code == 202, response.json()
    after = Instance.objects.get(pk=instance.pk)
    assert (after.state, after.host_id, after.ip_address) == ("running", first.pk, instance.ip_address)
    assert holdings(first, after).active
    assert used(second) == (0, 0, 0)
    failed = after.actions.get(action="migrate", status="failed")
    assert failed.step == "migrate" and "migrate" in failed.error


def test_it_drains_a_host_moving_what_can_move(eager, operator, alice, tenant_a, segment_hosts, image):
    # given: on the first host of a segment, a stopped instance, and one in the middle of a reboot
    first, second = segment_hosts
    flavor = Flavor.objects.create(name="seg.drain", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=1, traffic_gb=1)
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)
    who = actor(alice, tenant_a)
    made = []
    for name in ("resting", "busy"):
        request = services.CreateRequest(
            name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
        )
        made.append(services.instance_create(actor=who, request=request))
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)
    resting, busy = made
    services.instance_stop(actor=who, instance=Instance.objects.get(pk=resting.pk))
    Instance.objects.filter(pk=busy.pk).update(state="rebooting")

    # when
    response = client_for(operator).post(f"/api/v1/admin/hosts/{first.pk}/drain")

    # then: the host takes nothing new, the stopped one moved, the busy one waits, with why
    assert response.status_code == 202, response.json()
    body = response.json()
    assert [m["name"] for m in body["moving"]] == ["resting"]
    assert [(w["name"], w["state"]) for w in body["waiting"]] == [("busy", "rebooting")]
    first.refresh_from_db()
    assert first.status == Host.Status.DISABLED
    assert Instance.objects.get(pk=resting.pk).host_id == second.pk

    # and: undrain puts it back in service
    response = client_for(operator).post(f"/api/v1/admin/hosts/{first.pk}/undrain")
    assert response.status_code == 200 and response.json()["status"] == "up"
    assert client_for(alice).post(f"/api/v1/admin/hosts/{first.pk}/drain").status_code == 403
