"""Heartbeats, silent hosts, power-state sync and the orphan report, on libvirt's test driver."""

from datetime import timedelta

from django.utils import timezone

from compute import operations, services
from compute.drivers.libvirt import connect
from compute.models import Host, Instance, InstanceAction
from compute.simulated import POOL_GB
from compute.sizing import Size
from tests.conftest import actor


def running_instance(alice, tenant_a, image, flavor, name="vm"):
    request = services.CreateRequest(
        name=name, image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
    )
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    operations.provision(instance.pk)
    instance.refresh_from_db()
    assert instance.state == "running"
    return instance


def test_it_refreshes_capacity_and_revives_a_down_host(db, simulated_host):
    host = simulated_host(cpus=6, memory_mb=12288)
    Host.objects.filter(pk=host.pk).update(status=Host.Status.DOWN, vcpus_total=1, last_heartbeat=None)

    operations.heartbeat(host.pk)

    host.refresh_from_db()
    assert (host.vcpus_total, host.memory_mb_total, host.disk_gb_total) == (6, 12288, POOL_GB)
    assert host.status == Host.Status.UP
    assert host.last_heartbeat is not None


def test_it_marks_silent_hosts_down_but_leaves_disabled_ones(db, simulated_host, settings):
    silent, fresh, disabled = simulated_host(), simulated_host(), simulated_host()
    old = timezone.now() - timedelta(seconds=settings.HOST_DOWN_AFTER_SECONDS + 5)
    Host.objects.filter(pk=silent.pk).update(last_heartbeat=old)
    Host.objects.filter(pk=fresh.pk).update(last_heartbeat=timezone.now())
    Host.objects.filter(pk=disabled.pk).update(last_heartbeat=old, status=Host.Status.DISABLED)

    down = operations.mark_silent_hosts_down()

    assert down == [silent.name]
    assert Host.objects.get(pk=silent.pk).status == Host.Status.DOWN
    assert Host.objects.get(pk=fresh.pk).status == Host.Status.UP
    assert Host.objects.get(pk=disabled.pk).status == Host.Status.DISABLED


def test_it_never_places_instances_on_a_down_host(db, simulated_host, alice, tenant_a, image, flavor):
    host = simulated_host()
    Host.objects.filter(pk=host.pk).update(status=Host.Status.DOWN)
    request = services.CreateRequest(name="x", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=None)

    try:
        services.instance_create(actor=actor(alice, tenant_a), request=request)
        raised = None
    except Exception as exc:  # ConflictError
        raised = exc

    assert raised is not None and "No host has room" in str(raised.detail)
    assert not Instance.objects.exists()


def test_it_records_a_guest_that_powered_itself_off(db, host, alice, tenant_a, image, flavor):
    # given a running instance whose guest shuts down behind the portal's back
    instance = running_instance(alice, tenant_a, image, flavor)
    connect(host.uri).lookupByUUIDString(str(instance.pk)).destroy()

    # when
    report = operations.sync_power_states(host.pk)

    # then
    instance.refresh_from_db()
    assert report["stopped"] == [str(instance.pk)]
    assert instance.state == "stopped"
    sync = InstanceAction.objects.get(instance=instance, action="sync")
    assert sync.detail == {"from": "running", "to": "stopped", "power": "shutoff"}
    # and a second sync finds nothing to repair
    assert operations.sync_power_states(host.pk) == {"stopped": [], "started": [], "missing": []}


def test_it_flags_an_instance_whose_domain_vanished(db, host, alice, tenant_a, image, flavor):
    instance = running_instance(alice, tenant_a, image, flavor)
    dom = connect(host.uri).lookupByUUIDString(str(instance.pk))
    dom.destroy()
    dom.undefine()

    report = operations.sync_power_states(host.pk)

    instance.refresh_from_db()
    assert report["missing"] == [str(instance.pk)]
    assert (instance.state, instance.error_step) == ("error", "sync")


def test_it_reports_domains_and_volumes_no_instance_owns(db, host, alice, tenant_a, image, flavor):
    kept = running_instance(alice, tenant_a, image, flavor, name="kept")
    lost = running_instance(alice, tenant_a, image, flavor, name="lost")
    # The database forgets `lost` while its domain and volumes stay on the host.
    Instance.objects.filter(pk=lost.pk).update(state="deleted")

    report = operations.report_orphans(host.pk)

    assert report["domains"] == [str(lost.pk)]
    assert sorted(report["volumes"]) == sorted([f"inst-{lost.pk}-disk.qcow2", f"inst-{lost.pk}-seed.iso"])
    assert str(kept.pk) not in report["domains"]
    host.refresh_from_db()
    assert host.orphans["domains"] == [str(lost.pk)]
