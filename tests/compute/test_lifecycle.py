"""create -> RUNNING -> stop -> start -> resize -> delete through the HTTP API, on test:///."""

import libvirt
import pytest
from django.db.models.signals import post_save

from compute import operations, tasks
from compute.driver_refs import host_ref
from compute.drivers.libvirt import connect, disk_volume, driver_for, power_off, seed_volume
from compute.models import Host, Instance, InstanceAction, IpAllocation


def wait_state(api_client, instance_id, state):
    body = api_client.get(f"/api/v1/instances/{instance_id}").json()
    assert body["state"] == state, body
    return body


def test_it_runs_the_whole_life_cycle_through_the_api(eager, api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    # given / when: create
    response = client.post(
        "/api/v1/instances", {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    )
    # then: accepted at once with the allocated address
    assert response.status_code == 202, response.json()
    created = response.json()
    assert created["ip_address"].startswith("10.")
    instance_id = created["id"]
    body = wait_state(client, instance_id, "running")
    assert body["progress"] == 100
    steps = [a["step"] for a in body["actions"] if a["action"] == "create" and a["step"]]
    assert steps == ["image", "disk", "seed", "dhcp", "firewall", "define", "start"]
    conn = connect(host.uri)
    dom = conn.lookupByUUIDString(instance_id)
    assert dom.isActive()

    assert client.post(f"/api/v1/instances/{instance_id}/stop").status_code == 202
    wait_state(client, instance_id, "stopped")
    assert not dom.isActive()

    assert client.post(f"/api/v1/instances/{instance_id}/start").status_code == 202
    wait_state(client, instance_id, "running")
    assert dom.isActive()

    response = client.post(
        f"/api/v1/instances/{instance_id}/resize",
        {"vcpus": 2, "memory_mb": 1024, "disk_gb": 20, "bandwidth_mbit": 100, "traffic_gb": 500},
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = wait_state(client, instance_id, "running")
    assert body["size"]["vcpus"] == 2 and body["size"]["memory_mb"] == 1024
    assert dom.info()[3] == 2 and dom.maxMemory() == 1024 * 1024
    host.refresh_from_db()
    assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (2, 1024, 20)

    assert client.delete(f"/api/v1/instances/{instance_id}").status_code == 202
    wait_state(client, instance_id, "deleted")
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByUUIDString(instance_id)
    pool = conn.storagePoolLookupByName(host.storage_pool)
    assert disk_volume(instance_id) not in pool.listVolumes()
    assert seed_volume(instance_id) not in pool.listVolumes()
    net_xml = conn.networkLookupByName(host.network).XMLDesc(0)
    assert created["mac_address"] not in net_xml
    assert not IpAllocation.objects.filter(instance_id=instance_id).exists()
    host = Host.objects.get(pk=host.pk)
    assert (host.vcpus_used, host.memory_mb_used, host.disk_gb_used) == (0, 0, 0)
    assert Instance.objects.get(pk=instance_id).deleted_at is not None


def test_a_stop_that_meets_a_guest_just_powering_itself_off_ends_stopped(building):
    # given: a running instance whose guest has powered itself off after the stop looked
    # (the stop's hard power-off then finds it not running: libvirt refuses)
    assert operations.provision(building.pk) == "running"
    drv = driver_for(host_ref(building.host))
    dom = connect(building.host.uri).lookupByUUIDString(str(building.pk))
    dom.destroy()
    with pytest.raises(libvirt.libvirtError, match="not running"):
        dom.destroy()

    # when / then: the power-off takes that for done, so the stop ends with the guest off
    power_off(dom)
    assert drv.stop(str(building.pk), 0).power == "shutoff"
    # and any other refusal still fails
    dom.undefine()
    with pytest.raises(libvirt.libvirtError):
        power_off(dom)


def test_a_build_whose_instance_left_building_does_not_start_it(building):
    # given: the instance is taken out of BUILDING while its build defines the domain (its
    # state changed in the database alone, as by a delete whose task has not run yet)
    def leave_building(sender, instance, **kwargs):
        if instance.step == "define" and instance.pk is not None:
            Instance.objects.filter(pk=building.pk).update(state="deleting")

    post_save.connect(leave_building, sender=InstanceAction, dispatch_uid="leave-building")
    try:
        # when
        result = tasks.provision.apply(args=[str(building.pk)]).get()
    finally:
        post_save.disconnect(sender=InstanceAction, dispatch_uid="leave-building")
    # then: superseded before the start step; the guest was never started
    assert result == "superseded"
    steps = dict(InstanceAction.objects.filter(instance=building).exclude(step="").values_list("step", "status"))
    assert "start" not in steps
    assert steps["define"] == "done"  # the step before says how it ended
    assert not connect(building.host.uri).lookupByUUIDString(str(building.pk)).isActive()
    assert Instance.objects.get(pk=building.pk).state == "deleting"
