"""A dead host on simulated hosts: the state machine of evacuation and HA (compute.evacuation).

Two hosts of one segment, each with a shared pool; the test driver's pools are each host's
own, so a test copies the disk into the second host's shared pool as shared storage would
show it. Tasks run where a worker would run them, called one by one, so that each step can
be looked at (and the clock moved) in between.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from billing.sla import availability
from compute import services, tasks
from compute.drivers import libvirt_xml as lx
from compute.drivers.libvirt import GIB, connect, disk_volume
from compute.hosts import host_register
from compute.migration import instance_migrate
from compute.models import Flavor, Host, Instance, IpAllocation
from compute.sizing import Size
from tenants.access import operator_actor
from tests.compute.hypervisor import holdings
from tests.conftest import RUN_ID, actor, client_for
from tests.hostfaults import hypervisor_unreachable, worker_silent_since
from tests.simulated import write_host

pytestmark = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def segment_host(tmp_path):
    """A factory: simulated hosts of one segment (one subnet), with a shared pool or not."""
    made = iter(range(1, 100))

    def make(*, shared: bool = True) -> Host:
        name = f"ha{next(made)}-{RUN_ID}"
        pool = f"{name}-shared" if shared else ""
        args = write_host(tmp_path, name=name, subnet=93, shared_pool=pool)
        return host_register(segment="rack-ha", shared_pool=pool, **args)

    return make


@pytest.fixture
def ha_flavor(db) -> Flavor:
    return Flavor.objects.create(
        name="ha.small", vcpus=1, memory_mb=512, disk_gb=10, sla_percent=Decimal("99.95"), ha=True
    )


def build(user, tenant, image, flavor, name: str) -> Instance:
    """Create, and run the build as the host's worker would."""
    request = services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    instance = services.instance_create(actor=actor(user, tenant), request=request)
    assert tasks.provision.apply(args=[str(instance.pk)]).get() == "running"
    return Instance.objects.get(pk=instance.pk)


def share_disk(instance: Instance, host: Host) -> None:
    """What the shared storage shows on `host`: the instance's disk."""
    pool = connect(host.uri).storagePoolLookupByName(host.shared_pool)
    pool.createXML(lx.volume_xml(disk_volume(str(instance.pk)), GIB, "qcow2"), 0)


def shared_volumes(host: Host, instance: Instance) -> list[str]:
    pool = connect(host.uri).storagePoolLookupByName(host.shared_pool)
    pool.refresh(0)
    return sorted(name for name in pool.listVolumes() if str(instance.pk) in name)


def running_copies(instance: Instance, hosts: list[Host]) -> list[str]:
    return [host.name for host in hosts if holdings(host, instance).active]


def used(host: Host) -> tuple[int, int, int]:
    host.refresh_from_db()
    return host.vcpus_used, host.memory_mb_used, host.disk_gb_used


def declare_dead(host: Host, settings) -> dict:
    """Beat's check, after the host's worker and hypervisor were silent long enough."""
    worker_silent_since(host, timezone.now() - timedelta(seconds=settings.HOST_DOWN_AFTER_SECONDS + 5))
    with hypervisor_unreachable(host):
        return tasks.check_hosts.apply().get()


def test_a_dead_hosts_ha_instance_restarts_elsewhere_and_the_others_wait_for_it(
    client, settings, segment_host, alice, tenant_a, image, flavor, ha_flavor
):
    settings.HOST_FENCE_COMMAND = ["true"]  # a fence that always succeeds
    first, second = segment_host(), segment_host()
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)  # the builds land on the first
    with time_machine.travel(T0, tick=False):
        ha = build(alice, tenant_a, image, ha_flavor, "db-1")
        plain = build(alice, tenant_a, image, flavor, "web-1")
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)
    assert (ha.host_id, ha.shared_disk, plain.host_id, plain.shared_disk) == (first.pk, True, first.pk, False)
    assert shared_volumes(first, ha)  # the HA disk is in the shared pool
    share_disk(ha, second)

    # when: the first host's worker and hypervisor are silent long enough (an hour after the builds)
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        report = declare_dead(first, settings)

    # then: it is down and fenced; the HA instance moved (host, claims, address) and waits to
    # start on the second host; the other one is host_down, waiting for its host
    assert report["marked_down"] == [first.name]
    assert report["evacuated"] == {
        first.name: {"restarting": [f"{ha.pk} -> {second.name}"], "host_down": [str(plain.pk)]}
    }
    first.refresh_from_db()
    assert first.status == Host.Status.DOWN and first.fenced_at is not None
    moved = Instance.objects.get(pk=ha.pk)
    assert (moved.state, moved.host_id, moved.ip_address) == ("evacuating", second.pk, ha.ip_address)
    assert IpAllocation.objects.get(instance=moved).pool.host_id == second.pk
    assert used(first) == (1, 512, 10) and used(second) == (1, 512, 10)
    waiting = Instance.objects.get(pk=plain.pk)
    assert (waiting.state, waiting.pending) == ("host_down", {"was": "running"})
    # the tenant sees host_down and may only delete it; nobody is offered to evacuate it
    body = client_for(alice).get(f"/api/v1/instances/{plain.pk}").json()
    assert (body["state"], body["allowed_actions"]) == ("host_down", ["delete"])
    client.force_login(alice)
    page = client.get(reverse("instance", args=[plain.pk])).content.decode()
    assert "Its host is down." in page and "is started again then if it was running" in page

    # when: the second host's worker runs the evacuation, ten minutes later
    with time_machine.travel(T0 + timedelta(hours=1, minutes=10), tick=False):
        assert tasks.evacuate.apply(args=[str(ha.pk)]).get() == "running"
    moved.refresh_from_db()
    assert (moved.state, moved.host_id, moved.power_state) == ("running", second.pk, "running")
    steps = [a.step for a in moved.actions.filter(action="evacuate").exclude(step="")]
    assert steps == ["disk", "seed", "dhcp", "firewall", "define", "start"]
    assert holdings(second, moved).dhcp == [
        {"mac": moved.mac_address, "ip": moved.ip_address, "name": f"i-{moved.pk.hex}"}
    ]

    # when: the first host comes back half an hour after it went down (its stale copy of the
    # HA instance runs on: the test driver's guests do not die with the daemon)
    assert running_copies(moved, [first, second]) == [first.name, second.name]
    with time_machine.travel(T0 + timedelta(hours=1, minutes=30), tick=False):
        returned = tasks.host_heartbeat.apply(args=[str(first.pk)]).get()

    # then: the stale copy is gone (its disk stays: it is the running copy's), the other
    # instance runs again where it was, and no instance runs twice
    assert returned["returned"] is True
    assert returned["reclaimed"]["removed"] == [str(ha.pk)] and returned["reclaimed"]["back"] == [str(plain.pk)]
    assert holdings(first, moved).domains == [] and holdings(first, moved).dhcp == []
    assert shared_volumes(first, moved)
    assert running_copies(moved, [first, second]) == [second.name]
    assert running_copies(plain, [first, second]) == [first.name]
    assert Instance.objects.get(pk=plain.pk).state == "running"

    # and: each outage counted once for SLA: 10 minutes for the HA instance, 30 for the other
    # (its host's own down time says the same, and is not added again)
    day = (T0, T0 + timedelta(days=1))
    assert availability(Instance.objects.get(pk=ha.pk), *day).downtime_seconds == 600
    assert availability(Instance.objects.get(pk=plain.pk), *day).downtime_seconds == 1800


@pytest.mark.parametrize(
    ("command", "detail"),
    [([], "not fenced (no HOST_FENCE_COMMAND)"), (["false"], "fencing failed (exit status 1)")],
    ids=["no-fence-command", "fence-fails"],
)
def test_an_unfenced_host_keeps_its_ha_instance_waiting(
    client, settings, segment_host, alice, tenant_a, image, ha_flavor, operator, command, detail
):
    settings.HOST_FENCE_COMMAND = command
    first, second = segment_host(), segment_host()
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)
    ha = build(alice, tenant_a, image, ha_flavor, "db-1")
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)

    report = declare_dead(first, settings)

    # two copies writing one disk would be worse than waiting: it stays, host_down
    assert report["evacuated"] == {first.name: {"restarting": [], "host_down": [str(ha.pk)]}}
    assert Instance.objects.get(pk=ha.pk).host_id == first.pk
    first.refresh_from_db()
    assert detail in first.status_detail and first.fenced_at is None
    assert used(second) == (0, 0, 0)
    # the operators' dashboard says why
    client.force_login(operator)
    assert detail in client.get(reverse("ops-hosts")).content.decode()


def test_a_host_seen_recently_is_not_declared_dead_yet(settings, segment_host, alice, tenant_a, image, flavor):
    first = segment_host()
    plain = build(alice, tenant_a, image, flavor, "web-1")
    # the hypervisor answered a minute ago, past a worker silent for longer
    Host.objects.filter(pk=first.pk).update(hypervisor_seen_at=timezone.now() - timedelta(seconds=60))

    report = declare_dead(first, settings)

    assert report["marked_down"] == [] and report["evacuated"] == {}
    assert Host.objects.get(pk=first.pk).status == Host.Status.UP
    assert Instance.objects.get(pk=plain.pk).state == "running"


def test_a_returning_host_starts_again_what_was_meant_to_run(settings, segment_host, alice, tenant_a, image, flavor):
    first = segment_host(shared=False)
    running = build(alice, tenant_a, image, flavor, "web-1")
    stopped = build(alice, tenant_a, image, flavor, "web-2")
    services.instance_stop(actor=actor(alice, tenant_a), instance=stopped)
    assert tasks.stop.apply(args=[str(stopped.pk)]).get() == "stopped"
    declare_dead(first, settings)
    assert set(Instance.objects.filter(host=first).values_list("state", flat=True)) == {"host_down"}
    # the host rebooted: its guests did not survive
    connect(first.uri).lookupByUUIDString(str(running.pk)).destroy()

    returned = tasks.host_heartbeat.apply(args=[str(first.pk)]).get()

    assert returned["reclaimed"]["restarting"] == [str(running.pk)]
    assert returned["reclaimed"]["back"] == [str(stopped.pk)]
    assert Instance.objects.get(pk=stopped.pk).state == "stopped"
    assert Instance.objects.get(pk=running.pk).state == "starting"
    assert tasks.start.apply(args=[str(running.pk)]).get() == "running"
    assert holdings(first, running).active


def test_a_worker_killed_while_reclaiming_leaves_the_rest_to_the_next_heartbeat(
    settings, segment_host, alice, tenant_a, image, flavor
):
    first = segment_host(shared=False)
    running = build(alice, tenant_a, image, flavor, "web-1")
    declare_dead(first, settings)  # no HA instance on it: nothing fenced it
    # the heartbeat that saw the host back flipped it up, and its worker died before reclaiming
    Host.objects.filter(pk=first.pk).update(status=Host.Status.UP)
    assert Instance.objects.get(pk=running.pk).state == "host_down"
    assert Host.objects.get(pk=first.pk).fenced_at is None

    report = tasks.host_heartbeat.apply(args=[str(first.pk)]).get()

    # then: the next heartbeat, though it saw no return, finishes the work, and the one after
    # finds nothing left to do
    assert report["returned"] is False and report["reclaimed"]["back"] == [str(running.pk)]
    assert Instance.objects.get(pk=running.pk).state == "running"
    assert Host.objects.get(pk=first.pk).fenced_at is None
    assert "reclaimed" not in tasks.host_heartbeat.apply(args=[str(first.pk)]).get()


def test_a_stale_copy_left_by_a_worker_killed_while_reclaiming_goes_at_the_next_heartbeat(
    settings, segment_host, alice, tenant_a, image, ha_flavor
):
    # given: an HA instance evacuated from its fenced host, whose stale copy runs on there
    settings.HOST_FENCE_COMMAND = ["true"]
    first, second = segment_host(), segment_host()
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)
    ha = build(alice, tenant_a, image, ha_flavor, "db-1")
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)
    share_disk(ha, second)
    declare_dead(first, settings)
    assert tasks.evacuate.apply(args=[str(ha.pk)]).get() == "running"
    # the heartbeat that saw the first host back flipped it up, and its worker died before
    # reclaiming: no instance of it is host_down, but it is still marked fenced
    Host.objects.filter(pk=first.pk).update(status=Host.Status.UP)
    assert not Instance.objects.filter(host=first, state="host_down").exists()
    assert running_copies(ha, [first, second]) == [first.name, second.name]

    report = tasks.host_heartbeat.apply(args=[str(first.pk)]).get()

    # then: the next heartbeat removes the stale copy, and the next outage fences anew
    assert report["returned"] is False and report["reclaimed"]["removed"] == [str(ha.pk)]
    assert running_copies(ha, [first, second]) == [second.name]
    assert Host.objects.get(pk=first.pk).fenced_at is None


def test_an_ha_flavor_lands_only_where_storage_is_shared(segment_host, alice, tenant_a, image, ha_flavor):
    local = segment_host(shared=False)
    request = services.CreateRequest(
        name="db-1", image_id=str(image.pk), size=Size.of_flavor(ha_flavor), flavor_id=str(ha_flavor.pk)
    )
    response = client_for(alice).post(
        "/api/v1/instances", {"name": "db-1", "image": str(image.pk), "flavor": str(ha_flavor.pk)}, format="json"
    )
    assert response.status_code == 409, response.json()
    assert used(local) == (0, 0, 0)

    shared = segment_host()
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    assert (instance.host_id, instance.shared_disk) == (shared.pk, True)


def test_a_shared_disk_moves_only_between_hosts_that_mount_it(
    settings, segment_host, alice, tenant_a, image, ha_flavor, operator
):
    first, local, second = segment_host(), segment_host(shared=False), segment_host()
    for other in (local, second):
        Host.objects.filter(pk=other.pk).update(status=Host.Status.DISABLED)
    ha = build(alice, tenant_a, image, ha_flavor, "db-1")
    services.instance_stop(actor=actor(alice, tenant_a), instance=ha)
    tasks.stop.apply(args=[str(ha.pk)])
    Host.objects.filter(pk__in=[local.pk, second.pk]).update(status=Host.Status.UP)
    staff = operator_actor(operator, tenant_a)

    # to a host without the shared pool: refused, nothing claimed
    response = client_for(operator).post(
        f"/api/v1/admin/instances/{ha.pk}/migrate", {"host": str(local.pk)}, format="json"
    )
    assert response.status_code == 409 and "shared storage" in response.json()["detail"]
    assert used(local) == (0, 0, 0)

    # to one that mounts it: nothing is copied, and the source forgets it but keeps the disk
    share_disk(ha, second)
    instance_migrate(actor=staff, instance=Instance.objects.get(pk=ha.pk), host_id=str(second.pk))
    assert tasks.migrate.apply(args=[str(ha.pk)]).get() == "migrated"
    moved = Instance.objects.get(pk=ha.pk)
    assert (moved.state, moved.host_id, moved.ip_address) == ("stopped", second.pk, ha.ip_address)
    steps = [a.step for a in moved.actions.filter(action="migrate").exclude(step="")]
    assert steps == ["disk", "seed", "dhcp", "firewall", "define", "switch", "cleanup"]
    assert holdings(first, moved).domains == [] and shared_volumes(first, moved)


def test_an_ha_instance_that_found_no_room_restarts_once_there_is(
    settings, segment_host, alice, tenant_a, image, ha_flavor
):
    settings.HOST_FENCE_COMMAND = ["true"]
    first, second = segment_host(), segment_host()
    Host.objects.filter(pk=second.pk).update(status=Host.Status.DISABLED)  # in maintenance: no room anywhere
    ha = build(alice, tenant_a, image, ha_flavor, "db-1")
    share_disk(ha, second)

    # when: its host dies while the only other host of the segment takes nothing
    report = declare_dead(first, settings)

    # then: it waits in host_down, the host fenced once
    assert report["evacuated"] == {first.name: {"restarting": [], "host_down": [str(ha.pk)]}}
    fenced_at = Host.objects.get(pk=first.pk).fenced_at
    assert fenced_at is not None

    # when: the other host is back in service, and beat looks again
    Host.objects.filter(pk=second.pk).update(status=Host.Status.UP)
    with hypervisor_unreachable(first):
        report = tasks.check_hosts.apply().get()

    # then: it restarts there, without fencing the host again
    assert report["evacuated"] == {first.name: {"restarting": [f"{ha.pk} -> {second.name}"], "host_down": []}}
    assert Host.objects.get(pk=first.pk).fenced_at == fenced_at
    assert tasks.evacuate.apply(args=[str(ha.pk)]).get() == "running"
    assert Instance.objects.get(pk=ha.pk).host_id == second.pk
    # and: a beat with nothing left to do reports nothing
    with hypervisor_unreachable(first):
        assert tasks.check_hosts.apply().get()["evacuated"] == {}
