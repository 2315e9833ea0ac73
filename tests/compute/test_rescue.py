"""Rescue mode on libvirt's test driver: the rescue system boots from vda with the instance's own
disk as vdb, unrescue boots the instance's disk again; refusals are 409s; rescue bills as running.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.utils import timezone

from billing import usage
from compute import operations, tasks, transitions, upkeep
from compute.drivers.libvirt import connect, disk_volume, rescue_volume, seed_volume
from compute.models import Image, Instance, InstanceState, InstanceStateLog
from compute.transitions import refusal


@pytest.fixture
def rescue_image(settings):
    (settings.IMAGE_STORE / "rescue.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 1020)
    return Image.objects.create(
        name="Rescue", os_version="tiny", size_bytes=1024, source_path="rescue.qcow2", min_memory_mb=128, rescue=True
    )


def create_running(client, image, flavor) -> dict:
    response = client.post(
        "/api/v1/instances", {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    body = client.get(f"/api/v1/instances/{response.json()['id']}").json()
    assert body["state"] == "running", body
    return body


def disks_of(conn, uuid: str) -> list[tuple[str, str]]:
    """(target dev, source volume) of each disk of the persistent definition, in order."""
    root = ET.fromstring(conn.lookupByUUIDString(uuid).XMLDesc(0))  # noqa: S314 - libvirt's own output
    return [
        (disk.find("target").get("dev"), disk.find("source").get("volume")) for disk in root.iterfind("./devices/disk")
    ]


def test_it_boots_the_rescue_system_with_the_instance_disk_second_and_back(
    eager, api, alice, tenant_a, host, image, flavor, rescue_image
):
    client = api(alice)
    instance = create_running(client, image, flavor)
    uuid = instance["id"]
    conn = connect(host.uri)
    pool = conn.storagePoolLookupByName(host.storage_pool)
    assert disks_of(conn, uuid) == [("vda", disk_volume(uuid)), ("vdb", seed_volume(uuid))]

    # when
    response = client.post(f"/api/v1/instances/{uuid}/rescue")

    # then: the rescue system is vda, the customer's disk vdb, no seed; it runs
    assert response.status_code == 202, response.json()
    body = client.get(f"/api/v1/instances/{uuid}").json()
    assert body["state"] == "rescue" and body["power_state"] == "running"
    assert body["allowed_actions"] == ["delete", "unrescue"]
    assert disks_of(conn, uuid) == [("vda", rescue_volume(uuid)), ("vdb", disk_volume(uuid))]
    assert conn.lookupByUUIDString(uuid).isActive()
    assert rescue_volume(uuid) in pool.listVolumes()
    steps = [a["step"] for a in body["actions"] if a["action"] == "rescue" and a["step"]]
    assert steps == ["stop", "image", "disk", "define", "start"]

    # when: out of rescue
    response = client.post(f"/api/v1/instances/{uuid}/unrescue")

    # then: its own disk boots again, and the rescue disk is gone
    assert response.status_code == 202, response.json()
    body = client.get(f"/api/v1/instances/{uuid}").json()
    assert body["state"] == "running"
    assert disks_of(conn, uuid) == [("vda", disk_volume(uuid)), ("vdb", seed_volume(uuid))]
    assert conn.lookupByUUIDString(uuid).isActive()
    assert rescue_volume(uuid) not in pool.listVolumes()
    steps = [a["step"] for a in body["actions"] if a["action"] == "unrescue" and a["step"]]
    assert steps == ["stop", "define", "disk", "start"]


def test_it_rescues_a_stopped_instance_and_deletes_one_in_rescue(
    eager, api, alice, tenant_a, host, image, flavor, rescue_image
):
    client = api(alice)
    uuid = create_running(client, image, flavor)["id"]
    assert client.post(f"/api/v1/instances/{uuid}/stop").status_code == 202
    assert client.post(f"/api/v1/instances/{uuid}/rescue").status_code == 202
    assert Instance.objects.get(pk=uuid).state == InstanceState.RESCUE

    assert client.delete(f"/api/v1/instances/{uuid}").status_code == 202

    assert Instance.objects.get(pk=uuid).state == InstanceState.DELETED
    volumes = connect(host.uri).storagePoolLookupByName(host.storage_pool).listVolumes()
    assert not [name for name in volumes if uuid in name]


def test_it_says_when_no_rescue_image_is_offered(eager, api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    uuid = create_running(client, image, flavor)["id"]

    response = client.post(f"/api/v1/instances/{uuid}/rescue")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Rescue is not offered here: no operator has chosen a rescue image.",
        "code": "conflict",
    }
    assert Instance.objects.get(pk=uuid).state == InstanceState.RUNNING


def test_it_refuses_unrescue_of_an_instance_not_in_rescue(eager, api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    uuid = create_running(client, image, flavor)["id"]

    response = client.post(f"/api/v1/instances/{uuid}/unrescue")

    assert response.status_code == 409
    assert response.json()["detail"] == refusal("unrescue", "running")
    assert "unrescue needs it to be rescue" in response.json()["detail"]


def test_it_refuses_a_rescue_system_larger_than_the_instance(
    eager, api, alice, tenant_a, host, image, flavor, rescue_image
):
    client = api(alice)
    uuid = create_running(client, image, flavor)["id"]
    Image.objects.filter(pk=rescue_image.pk).update(min_memory_mb=flavor.memory_mb + 1)

    response = client.post(f"/api/v1/instances/{uuid}/rescue")

    assert response.status_code == 409
    assert "needs 513 MiB of memory" in response.json()["detail"]


def test_it_runs_a_redelivered_rescue_once(api, alice, tenant_a, host, image, flavor, rescue_image):
    # given: built, then a rescue requested (its task not run yet)
    client = api(alice)
    uuid = client.post(
        "/api/v1/instances", {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    ).json()["id"]
    assert operations.provision(uuid) == "running"
    assert client.post(f"/api/v1/instances/{uuid}/rescue").status_code == 202
    # when: the task runs, and a redelivered copy after it
    assert tasks.rescue.apply(args=[uuid]).get() == "rescue"
    assert tasks.rescue.apply(args=[uuid]).get() == "skipped"
    # then: one rescue, one log row of the state
    assert Instance.objects.get(pk=uuid).state == InstanceState.RESCUE
    assert list(InstanceStateLog.objects.filter(instance_id=uuid).values_list("state", flat=True)) == [
        "running",
        "rescue",
    ]


def test_it_hands_the_in_flight_states_to_the_reaper():
    for state, task in [
        (InstanceState.RESCUING, tasks.rescue),
        (InstanceState.UNRESCUING, tasks.unrescue),
        (InstanceState.DETACHING_ISO, tasks.detach_iso),
    ]:
        assert tasks.TASK_FOR_STATE[state] is task
        assert state in transitions.IN_FLIGHT


def test_it_bills_rescue_as_running(eager, api, alice, tenant_a, host, image, flavor, rescue_image):
    client = api(alice)
    uuid = create_running(client, image, flavor)["id"]
    assert client.post(f"/api/v1/instances/{uuid}/stop").status_code == 202
    assert client.post(f"/api/v1/instances/{uuid}/rescue").status_code == 202
    assert client.post(f"/api/v1/instances/{uuid}/unrescue").status_code == 202

    logs = list(InstanceStateLog.objects.filter(instance_id=uuid).order_by("at", "id"))
    kinds = [segment.kind for segment in usage.segments(logs, timezone.now() + timedelta(seconds=1))]

    assert [row.state for row in logs] == ["running", "stopped", "rescue", "running"]
    assert kinds[-2:] == ["running", "running"]
    assert kinds[1] == "stopped"


def test_it_keeps_a_rescue_in_rescue_when_its_system_powers_off_and_errs_when_it_vanishes(
    eager, api, alice, tenant_a, host, image, flavor, rescue_image
):
    # given: an instance in rescue
    client = api(alice)
    uuid = create_running(client, image, flavor)["id"]
    assert client.post(f"/api/v1/instances/{uuid}/rescue").status_code == 202
    conn = connect(host.uri)

    # when: the rescue system is shut down on the host, and the reconciler runs
    conn.lookupByUUIDString(uuid).destroy()
    report = upkeep.sync_power_states(str(host.pk))

    # then: still in rescue (the customer leaves it with unrescue), shown as shut off
    assert report["rescue_power"] == [uuid]
    body = client.get(f"/api/v1/instances/{uuid}").json()
    assert (body["state"], body["power_state"]) == ("rescue", "shutoff")
    assert upkeep.sync_power_states(str(host.pk))["rescue_power"] == []  # nothing new to record

    # when: its domain vanishes
    conn.lookupByUUIDString(uuid).undefine()
    upkeep.sync_power_states(str(host.pk))

    # then: an error for an operator, like any instance whose domain is gone
    assert Instance.objects.get(pk=uuid).state == InstanceState.ERROR
