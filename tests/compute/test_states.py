"""Which action may start from which state (compute/transitions.py), through the API.

A refused action answers 409 naming the action, the state and what it needs, and changes
nothing: not the instance, not the host's claims, not the logs. The flows at the end run
their tasks eagerly against libvirt's test driver.
"""

import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from compute import operations
from compute.drivers.libvirt import connect, disk_volume
from compute.drivers.libvirt_xml import backing_path_of
from compute.models import Host, Image, Instance, InstanceAction, InstanceState, InstanceStateLog, IpAllocation
from compute.transitions import OPERATOR_ACTIONS, TRANSITIONS, allowed_actions, refusal
from tenants.models import AuditEvent

ACTION_REQUESTS = {
    "start": ("post", "start", None),
    "stop": ("post", "stop", None),
    "reboot": ("post", "reboot", None),
    "resize": ("post", "resize", "resize"),
    "rebuild": ("post", "rebuild", "rebuild"),
    "snapshot": ("post", "snapshot", "snapshot"),
    "delete": ("delete", "", None),
    "detach_iso": ("post", "detach-iso", None),
    "rescue": ("post", "rescue", None),
    "unrescue": ("post", "unrescue", None),
}
# What an action needs besides the state: an ISO attached, a rescue image chosen.
PRECONDITIONS = {
    "detach_iso": lambda instance, image: Instance.objects.filter(pk=instance.pk).update(iso=image),
    "rescue": lambda instance, image: Image.objects.filter(pk=image.pk).update(rescue=True),
}


@pytest.fixture
def other_image(settings):
    (settings.IMAGE_STORE / "other.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 1020)
    return Image.objects.create(name="Other Linux", os_version="2", size_bytes=1024, source_path="other.qcow2")


def request_action(client, instance_id, action, image):
    method, path, body_kind = ACTION_REQUESTS[action]
    body = {
        None: None,
        "resize": {"vcpus": 2, "memory_mb": 1024, "disk_gb": 20, "bandwidth_mbit": 100, "traffic_gb": 500},
        "rebuild": {"image": str(image.pk)},
        "snapshot": {"name": f"snap-{uuid.uuid4().hex[:8]}"},  # a tenant's snapshot names are unique
    }[body_kind]
    url = f"/api/v1/instances/{instance_id}" + (f"/{path}" if path else "")
    return getattr(client, method)(url, body, format="json")


def everything_about(instance: Instance) -> dict:
    """All that a refused action must leave as it was."""
    row = Instance.objects.filter(pk=instance.pk).values().get()
    host = Host.objects.filter(pk=instance.host_id).values("vcpus_used", "memory_mb_used", "disk_gb_used").get()
    return {
        "instance": row,
        "host": host,
        "actions": InstanceAction.objects.filter(instance=instance).count(),
        "audit": AuditEvent.objects.count(),
        "images": list(Image.objects.values_list("pk", "state")),
        "ips": list(IpAllocation.objects.values_list("instance_id", "address")),
    }


@pytest.fixture
def created(api, alice, tenant_a, host, image, flavor):
    """An instance as the API creates it: building, its build queued (and never run here)."""
    response = api(alice).post(
        "/api/v1/instances", {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    )
    assert response.status_code == 202
    return Instance.objects.get(pk=response.json()["id"])


def assert_refused(response, action, state):
    assert response.status_code == 409, response.json()
    assert response.json() == {"detail": refusal(action, state), "code": "conflict"}
    assert f"Cannot {action} an instance that is {state}" in response.json()["detail"]


def test_it_refuses_to_start_a_running_instance(api, alice, created, other_image):
    # given: really running on the host
    assert operations.provision(str(created.pk)) == "running"
    before = everything_about(created)
    # when
    response = request_action(api(alice), created.pk, "start", other_image)
    # then
    assert_refused(response, "start", "running")
    assert response.json()["detail"] == "Cannot start an instance that is running; start needs it to be stopped."
    assert everything_about(created) == before
    assert connect(created.host.uri).lookupByUUIDString(str(created.pk)).isActive()


def test_it_refuses_to_resize_while_building(api, alice, created, other_image):
    before = everything_about(created)
    response = request_action(api(alice), created.pk, "resize", other_image)
    assert_refused(response, "resize", "building")
    assert everything_about(created) == before  # no claim on the host was kept either


def test_it_refuses_to_snapshot_while_deleting(api, alice, created, other_image):
    assert api(alice).delete(f"/api/v1/instances/{created.pk}").status_code == 202
    before = everything_about(created)
    response = request_action(api(alice), created.pk, "snapshot", other_image)
    assert_refused(response, "snapshot", "deleting")
    assert everything_about(created) == before  # in particular, no pending image was left behind


def test_it_refuses_to_delete_a_deleted_instance(api, alice, created, other_image):
    # given: built and then deleted for real
    operations.provision(str(created.pk))
    assert api(alice).delete(f"/api/v1/instances/{created.pk}").status_code == 202
    assert operations.delete(str(created.pk)) == "deleted"
    before = everything_about(created)
    # when
    response = api(alice).delete(f"/api/v1/instances/{created.pk}")
    # then
    assert_refused(response, "delete", "deleted")
    assert everything_about(created) == before


@pytest.mark.parametrize("action", sorted(set(TRANSITIONS) - OPERATOR_ACTIONS))
def test_it_follows_the_transition_table_for(api, alice, created, other_image, action):
    """Every state against one action: 202 into the in-flight state where the table allows it,
    409 and no change everywhere else."""
    client = api(alice)
    sources, in_flight = TRANSITIONS[action]
    PRECONDITIONS.get(action, lambda *_: None)(created, other_image)
    wrong = []
    for state in InstanceState.values:
        # given: the instance in `state`, with nothing in flight
        Instance.objects.filter(pk=created.pk).update(state=state, pending={})
        listed = client.get(f"/api/v1/instances/{created.pk}").json()
        # detaching an ISO is offered only to an instance that has one (the precondition above)
        has_iso = Instance.objects.filter(pk=created.pk, iso__isnull=False).exists()
        assert listed["allowed_actions"] == allowed_actions(state, has_iso=has_iso)
        assert ("detach_iso" in listed["allowed_actions"]) == (has_iso and state in TRANSITIONS["detach_iso"][0])
        assert (action in listed["allowed_actions"]) == (state in sources)
        before = everything_about(created)
        # when
        response = request_action(client, created.pk, action, other_image)
        # then
        after = Instance.objects.get(pk=created.pk)
        if state in sources:
            ok = response.status_code == 202 and after.state == in_flight and after.pending["from_state"] == state
        else:
            ok = (
                response.status_code == 409
                and response.json()["detail"] == refusal(action, state)
                and everything_about(created) == before
            )
        if not ok:
            wrong.append((state, response.status_code, response.json()))
    assert wrong == []


# -- flows, run eagerly ----------------------------------------------------------------------


def state_of(client, instance_id) -> dict:
    return client.get(f"/api/v1/instances/{instance_id}").json()


def create_running(client, image, flavor, name="web-1") -> dict:
    response = client.post(
        "/api/v1/instances", {"name": name, "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    body = state_of(client, response.json()["id"])
    assert body["state"] == "running", body
    return body


def test_it_reboots_a_running_instance(eager, api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    instance = create_running(client, image, flavor)
    response = client.post(f"/api/v1/instances/{instance['id']}/reboot")
    assert response.status_code == 202
    body = state_of(client, instance["id"])
    assert body["state"] == "running" and body["power_state"] == "running"
    assert ("reboot", "reboot", "done") in [(a["action"], a["step"], a["status"]) for a in body["actions"]]
    assert connect(host.uri).lookupByUUIDString(instance["id"]).isActive()


def test_it_rebuilds_from_another_image_keeping_the_domain(
    eager, api, alice, tenant_a, host, image, other_image, flavor
):
    client = api(alice)
    instance = create_running(client, image, flavor)
    conn = connect(host.uri)
    pool = conn.storagePoolLookupByName(host.storage_pool)
    dom = conn.lookupByUUIDString(instance["id"])
    assert backing_path_of(pool.storageVolLookupByName(disk_volume(instance["id"])).XMLDesc(0)).endswith(
        image.volume_name
    )
    # when
    response = client.post(f"/api/v1/instances/{instance['id']}/rebuild", {"image": str(other_image.pk)}, format="json")
    # then: same domain (UUID and name), a new disk over the other image, running again
    assert response.status_code == 202, response.json()
    body = state_of(client, instance["id"])
    assert body["state"] == "running" and body["image"] == str(other_image.pk), body
    same = conn.lookupByUUIDString(instance["id"])
    assert (same.UUIDString(), same.name()) == (dom.UUIDString(), dom.name())
    assert same.isActive()
    assert [d.UUIDString() for d in conn.listAllDomains(0)] == [instance["id"]]
    disk = pool.storageVolLookupByName(disk_volume(instance["id"]))
    assert backing_path_of(disk.XMLDesc(0)).endswith(other_image.volume_name)
    rebuild_steps = [a["step"] for a in body["actions"] if a["action"] == "rebuild" and a["step"]]
    assert rebuild_steps == ["stop", "wipe", "image", "disk", "seed", "dhcp", "firewall", "define", "start"]
    net_xml = conn.networkLookupByName(host.network).XMLDesc(0)
    assert net_xml.count(instance["mac_address"]) == 1


def test_it_snapshots_into_a_private_image_that_builds_on_the_same_host(
    eager, api, alice, bob, tenant_a, charlie, tenant_b, simulated_host, image, flavor
):
    # given: the instance on a small host, and a bigger host that would otherwise be chosen
    small = simulated_host(memory_mb=4096)
    client = api(alice)
    instance = create_running(client, image, flavor)
    assert instance["id"] in {str(i.pk) for i in Instance.objects.filter(host=small)}
    big = simulated_host(memory_mb=65536)
    # when
    response = client.post(f"/api/v1/instances/{instance['id']}/snapshot", {"name": "golden"}, format="json")
    # then: an active private image, the instance running again
    assert response.status_code == 202, response.json()
    snapshot = Image.objects.get(pk=response.json()["id"])
    assert (snapshot.state, snapshot.visibility, snapshot.tenant_id, snapshot.host_id) == (
        "active",
        "private",
        tenant_a.pk,
        small.pk,
    )
    assert state_of(client, instance["id"])["state"] == "running"
    volumes = connect(small.uri).storagePoolLookupByName(small.storage_pool).listVolumes()
    assert snapshot.volume_name in volumes
    # visible to tenant A only
    for user, sees in [(alice, True), (bob, True), (charlie, False)]:
        listed = {i["id"] for i in api(user).get("/api/v1/images").json()["results"]}
        assert (str(snapshot.pk) in listed) is sees
        assert api(user).get(f"/api/v1/images/{snapshot.pk}").status_code == (200 if sees else 404)
    refused = api(charlie).post(
        "/api/v1/instances", {"name": "x", "image": str(snapshot.pk), "flavor": str(flavor.pk)}, format="json"
    )
    assert refused.status_code == 400 and "image" in refused.json()["fields"]
    # usable by tenant A, on the host that holds it
    clone = create_running(client, snapshot, flavor, name="web-2")
    clone_row = Instance.objects.get(pk=clone["id"])
    assert clone_row.host_id == small.pk != big.pk
    disk = (
        connect(small.uri).storagePoolLookupByName(small.storage_pool).storageVolLookupByName(disk_volume(clone["id"]))
    )
    assert backing_path_of(disk.XMLDesc(0)).endswith(snapshot.volume_name)


def test_it_moves_the_state_only_together_with_its_log_row(created):
    # given: a stop in flight, and a state log that refuses the row (a worker dying between
    # the two writes would leave the same gap)
    Instance.objects.filter(pk=created.pk).update(state=InstanceState.STOPPING)
    table = InstanceStateLog._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION pg_temp.refuse_state_log() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the state log cannot be written'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_state_log()"
        )
    try:
        # when
        with pytest.raises(DatabaseError, match="the state log cannot be written"), transaction.atomic():
            operations._settle(Instance.objects.get(pk=created.pk), InstanceState.STOPPING, InstanceState.STOPPED)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER refuse ON {table}")

    # then: still stopping, so a resumed task settles it with its log row; billing never sees a
    # stopped instance whose log still says running
    assert Instance.objects.get(pk=created.pk).state == InstanceState.STOPPING
