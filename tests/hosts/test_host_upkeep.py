"""Heartbeats, silent hosts, power-state sync and the orphan report, on libvirt's test driver."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from base.errors import Conflict
from compute import operations, services, upkeep
from compute.drivers.libvirt import connect
from compute.models import Host, HostStatusLog, Instance, InstanceAction, InstanceStateLog
from compute.sizing import Size
from tests.conftest import actor
from tests.hostfaults import hypervisor_unreachable, worker_silent_since
from tests.simulated import POOL_GB


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

    upkeep.heartbeat(host.pk)

    host.refresh_from_db()
    assert (host.vcpus_total, host.memory_mb_total, host.disk_gb_total) == (6, 12288, POOL_GB)
    assert host.status == Host.Status.UP
    assert host.last_heartbeat is not None


def test_it_marks_hosts_down_only_when_worker_and_hypervisor_are_both_silent(db, simulated_host, settings):
    dead, worker_only, fresh, disabled = simulated_host(), simulated_host(), simulated_host(), simulated_host()
    old = timezone.now() - timedelta(seconds=settings.HOST_DOWN_AFTER_SECONDS + 5)
    worker_silent_since(dead, old)
    worker_silent_since(worker_only, old)
    Host.objects.filter(pk=fresh.pk).update(last_heartbeat=timezone.now())
    worker_silent_since(disabled, old)
    Host.objects.filter(pk=disabled.pk).update(status=Host.Status.DISABLED)

    with hypervisor_unreachable(dead):
        report = upkeep.check_silent_hosts()

    assert report == {"marked_down": [dead.name], "worker_silent": [worker_only.name]}
    assert Host.objects.get(pk=dead.pk).status == Host.Status.DOWN
    # a silent worker over a hypervisor that answers: guests run, no SLA downtime
    worker_only.refresh_from_db()
    assert worker_only.status == Host.Status.UP
    assert "worker is not answering" in worker_only.status_detail
    assert not HostStatusLog.objects.filter(host=worker_only).exists()
    assert Host.objects.get(pk=fresh.pk).status == Host.Status.UP
    assert Host.objects.get(pk=disabled.pk).status == Host.Status.DISABLED


def test_it_takes_a_host_whose_worker_never_answered_down(db, simulated_host, settings):
    # given: a host registered, asked for heartbeats, whose worker never started
    host = simulated_host()
    upkeep.ask_for_heartbeats([Host.Status.UP])
    later = timezone.now() + timedelta(seconds=settings.HOST_DOWN_AFTER_SECONDS + 5)

    # when its hypervisor is unreachable too
    with time_machine.travel(later, tick=False), hypervisor_unreachable(host):
        report = upkeep.check_silent_hosts()

    # then
    assert report["marked_down"] == [host.name]
    assert Host.objects.get(pk=host.pk).status == Host.Status.DOWN


def test_it_judges_no_host_before_asking_after_a_pause(db, simulated_host, settings):
    # given: the last heartbeat is hours old because beat was stopped, not because the host is
    host = simulated_host()
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now() - timedelta(hours=3))

    # when beat comes back: nothing was asked and left unanswered, so nothing is judged
    with hypervisor_unreachable(host):
        report = upkeep.check_silent_hosts()

    assert report["marked_down"] == []
    assert Host.objects.get(pk=host.pk).status == Host.Status.UP


def test_it_places_nothing_on_a_host_whose_worker_is_silent(db, simulated_host, alice, tenant_a, image, flavor):
    silent = simulated_host()
    worker_silent_since(silent, timezone.now() - timedelta(hours=1))
    request = services.CreateRequest(name="x", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=None)

    with pytest.raises(Conflict) as refused:
        services.instance_create(actor=actor(alice, tenant_a), request=request)

    assert "1 host(s) are down or not answering" in refused.value.message


def test_it_never_places_instances_on_a_down_host(db, simulated_host, alice, tenant_a, image, flavor):
    host = simulated_host()
    Host.objects.filter(pk=host.pk).update(status=Host.Status.DOWN)
    request = services.CreateRequest(name="x", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=None)

    try:
        services.instance_create(actor=actor(alice, tenant_a), request=request)
        raised = None
    except Exception as exc:  # Conflict
        raised = exc

    assert raised is not None and "1 host(s) are down or not answering" in raised.message
    assert not Instance.objects.exists()


def test_it_records_a_guest_that_powered_itself_off(db, host, alice, tenant_a, image, flavor):
    # given a running instance whose guest shuts down behind the portal's back
    instance = running_instance(alice, tenant_a, image, flavor)
    connect(host.uri).lookupByUUIDString(str(instance.pk)).shutdown()

    # when
    report = upkeep.sync_power_states(host.pk)

    # then
    instance.refresh_from_db()
    assert report["stopped"] == [str(instance.pk)]
    assert instance.state == "stopped"
    sync = InstanceAction.objects.get(instance=instance, action="sync")
    assert sync.detail == {"from": "running", "to": "stopped", "power": "shutoff"}
    # and a second sync finds nothing to repair
    assert not any(upkeep.sync_power_states(host.pk).values())


def test_it_flags_an_instance_whose_domain_vanished(db, host, alice, tenant_a, image, flavor):
    instance = running_instance(alice, tenant_a, image, flavor)
    dom = connect(host.uri).lookupByUUIDString(str(instance.pk))
    dom.destroy()
    dom.undefine()

    report = upkeep.sync_power_states(host.pk)

    instance.refresh_from_db()
    assert report["missing"] == [str(instance.pk)]
    assert (instance.state, instance.error_step) == ("error", "sync")


def test_it_reports_domains_and_volumes_no_instance_owns(db, host, alice, tenant_a, image, flavor):
    kept = running_instance(alice, tenant_a, image, flavor, name="kept")
    lost = running_instance(alice, tenant_a, image, flavor, name="lost")
    # The database forgets `lost` while its domain and volumes stay on the host.
    Instance.objects.filter(pk=lost.pk).update(state="deleted")

    report = upkeep.report_orphans(host.pk)

    assert report["domains"] == [str(lost.pk)]
    assert sorted(report["volumes"]) == sorted([f"inst-{lost.pk}-disk.qcow2", f"inst-{lost.pk}-seed.iso"])
    assert str(kept.pk) not in report["domains"]
    host.refresh_from_db()
    assert host.orphans["domains"] == [str(lost.pk)]


def test_it_starts_again_a_guest_the_host_stopped_and_counts_it_as_downtime(
    transactional_db, eager, host, alice, tenant_a, image, flavor
):
    # given: a running guest destroyed on the host (not by its tenant, not by the portal)
    instance = running_instance(alice, tenant_a, image, flavor)
    connect(host.uri).lookupByUUIDString(str(instance.pk)).destroy()

    # when
    report = upkeep.sync_power_states(host.pk)

    # then: started again, and the gap is logged as the system's downtime
    assert report["restarted"] == [str(instance.pk)]
    instance.refresh_from_db()
    assert instance.state == "running"
    assert connect(host.uri).lookupByUUIDString(str(instance.pk)).isActive()
    states = list(InstanceStateLog.objects.filter(instance=instance).values_list("state", "cause"))
    assert states[-2:] == [("error", "system"), ("running", "tenant")]


def test_it_recovers_an_instance_in_error_whose_guest_runs(db, host, alice, tenant_a, image, flavor):
    # given: an action failed (say, the database went away) after the guest was running
    instance = running_instance(alice, tenant_a, image, flavor)
    Instance.objects.filter(pk=instance.pk).update(state="error", error_step="start")

    report = upkeep.sync_power_states(host.pk)

    assert report["recovered"] == [str(instance.pk)]
    instance.refresh_from_db()
    assert instance.state == "running"


def test_it_watches_disabled_hosts_too(db, host, alice, tenant_a, image, flavor):
    from compute import tasks

    Host.objects.filter(pk=host.pk).update(status=Host.Status.DISABLED)
    assert tasks.sync_all_hosts.apply().get() == 1
    assert tasks.check_hosts.apply().get()["asked"] == 1


def test_it_leaves_out_of_the_claimable_disk_what_images_and_seeds_take(db, host):
    # given: a 5 GiB base image in the host's pool
    pool = connect(host.uri).storagePoolLookupByName(host.storage_pool)
    pool.createXML(
        "<volume><name>img-big.raw</name><capacity unit='bytes'>5368709120</capacity>"
        "<target><format type='raw'/></target></volume>",
        0,
    )

    upkeep.heartbeat(host.pk)

    # then: instances can claim the pool less the image
    host.refresh_from_db()
    assert host.disk_gb_total == POOL_GB - 5


def test_it_removes_a_deleted_images_volume_once_its_last_instance_is_gone(
    transactional_db, eager, host, alice, tenant_a, image, flavor, operator
):
    from compute import hosts as host_services
    from compute.driver_refs import image_ref

    instance = running_instance(alice, tenant_a, image, flavor)
    pool = connect(host.uri).storagePoolLookupByName(host.storage_pool)
    volume = image_ref(image).volume
    assert volume in pool.listVolumes()

    # when: the operator deletes the image while an instance is built on it
    host_services.image_delete(actor=None, image=image)

    # then: the volume stays while the instance needs it, and goes with the instance
    assert volume in pool.listVolumes()
    services.instance_delete(actor=actor(alice, tenant_a), instance=instance)
    instance.refresh_from_db()
    assert instance.state == "deleted"
    assert volume not in pool.listVolumes()
    assert volume + ".complete" not in pool.listVolumes()


def test_it_removes_an_unused_deleted_images_volume_at_once(
    transactional_db, eager, host, alice, tenant_a, image, flavor
):
    from compute import hosts as host_services
    from compute.driver_refs import image_ref

    instance = running_instance(alice, tenant_a, image, flavor)
    services.instance_delete(actor=actor(alice, tenant_a), instance=instance)
    pool = connect(host.uri).storagePoolLookupByName(host.storage_pool)
    assert image_ref(image).volume in pool.listVolumes()

    host_services.image_delete(actor=None, image=image)

    assert image_ref(image).volume not in pool.listVolumes()


def test_it_shows_a_tenant_that_the_host_of_an_instance_is_down(db, api, host, alice, tenant_a, image, flavor):
    instance = running_instance(alice, tenant_a, image, flavor)
    client = api(alice)
    assert client.get(f"/api/v1/instances/{instance.pk}").json()["host_down"] is False

    Host.objects.filter(pk=host.pk).update(status=Host.Status.DOWN)

    assert client.get(f"/api/v1/instances/{instance.pk}").json()["host_down"] is True
    assert client.get("/api/v1/instances").json()["results"][0]["host_down"] is True


def test_it_registers_a_host_with_an_address_pool_apart_from_dhcps_range(db, api, operator, tmp_path):
    from tests.simulated import write_host

    args = write_host(tmp_path, name="reg-pool", subnet=77)
    client = api(operator)
    body = {"name": "reg-pool", "uri": args["uri"], "storage_pool": args["storage_pool"], "network": args["network"]}

    # the pool must be inside the network, in order, and without the gateway
    for first, last, field in [
        ("10.100.78.10", "10.100.78.20", "pool_first"),
        ("10.100.77.30", "10.100.77.20", "pool_last"),
        ("10.100.77.1", "10.100.77.20", "pool_first"),
    ]:
        refused = client.post("/api/v1/admin/hosts", {**body, "pool_first": first, "pool_last": last}, format="json")
        assert refused.status_code == 400 and field in refused.json()["fields"], refused.json()
    only_one = client.post("/api/v1/admin/hosts", {**body, "pool_first": "10.100.77.2"}, format="json")
    assert only_one.status_code == 400 and "pool_last" in only_one.json()["fields"]
    assert not Host.objects.filter(name="reg-pool").exists()

    created = client.post(
        "/api/v1/admin/hosts", {**body, "pool_first": "10.100.77.2", "pool_last": "10.100.77.9"}, format="json"
    )

    assert created.status_code == 201, created.json()
    pool = Host.objects.get(name="reg-pool").ip_pool
    assert (pool.first, pool.last) == ("10.100.77.2", "10.100.77.9")
