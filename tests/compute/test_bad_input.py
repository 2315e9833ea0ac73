"""Bad and hostile input to instance create, through the API.

Errors are 400 with the offending fields named in `fields` (403 for quota). Names are the
tenant's own text: stored and returned exactly as given, and kept out of everything on the
host that is parsed (domain XML, volume names); the guest's hostname is a sanitized label.
"""

import json
import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import pytest

from compute.driver_refs import image_ref
from compute.drivers.base import HostError
from compute.drivers.libvirt import connect
from compute.models import Image, Instance
from tenants.models import Quota
from tests.compute.hypervisor import expected_volumes, holdings, recording_driver
from tests.conftest import client_for
from tests.seeds import read_seed

CUSTOM = {"vcpus": 2, "memory_mb": 1024, "disk_gb": 20, "bandwidth_mbit": 100, "traffic_gb": 500}


def create(client, **body):
    return client.post("/api/v1/instances", body, format="json")


def assert_bad(response, *fields):
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid"
    assert sorted(body["fields"]) == sorted(fields)
    return body


@pytest.fixture
def client(api, alice, tenant_a, host):
    return api(alice)


def test_it_names_an_unknown_image(client, flavor):
    body = assert_bad(
        create(client, name="a", image="00000000-0000-0000-0000-000000000000", flavor=str(flavor.pk)), "image"
    )
    assert body["fields"]["image"] == ["Unknown image."]
    assert_bad(create(client, name="a", image="not-a-uuid", flavor=str(flavor.pk)), "image")
    assert not Instance.objects.exists()


def test_it_names_a_deleted_or_pending_image_as_unknown(client, image, flavor):
    for state in ("deleted", "pending", "error"):
        Image.objects.filter(pk=image.pk).update(state=state)
        assert_bad(create(client, name="a", image=str(image.pk), flavor=str(flavor.pk)), "image")


def test_it_names_an_unknown_or_retired_flavor(client, image, flavor):
    body = assert_bad(
        create(client, name="a", image=str(image.pk), flavor="00000000-0000-0000-0000-000000000000"), "flavor"
    )
    assert body["fields"]["flavor"] == ["Unknown or retired flavor."]
    flavor.active = False
    flavor.save()
    assert_bad(create(client, name="a", image=str(image.pk), flavor=str(flavor.pk)), "flavor")


def test_it_names_each_custom_size_outside_the_limits(client, image, settings):
    limits = settings.CUSTOM_SIZE_LIMITS
    too_much = {
        "vcpus": limits["vcpus"][1] + 1,
        "memory_mb": limits["memory_mb"][0] - 1,
        "disk_gb": limits["disk_gb"][1] + 1,
        "bandwidth_mbit": limits["bandwidth_mbit"][1] + 1,
        "traffic_gb": limits["traffic_gb"][1] + 1,
    }
    body = assert_bad(create(client, name="a", image=str(image.pk), **too_much), *too_much)
    assert body["fields"]["vcpus"] == [f"Must be between 1 and {limits['vcpus'][1]}."]
    assert body["fields"]["memory_mb"] == [f"Must be between {limits['memory_mb'][0]} and {limits['memory_mb'][1]}."]
    assert not Instance.objects.exists()


def test_it_names_the_missing_parts_of_a_custom_size(client, image):
    body = assert_bad(
        create(client, name="a", image=str(image.pk), vcpus=2, memory_mb=1024),
        "disk_gb",
        "bandwidth_mbit",
        "traffic_gb",
    )
    assert body["fields"]["disk_gb"] == ["This field is required for a custom size."]


def test_it_refuses_zero_and_negative_sizes(client, image):
    body = assert_bad(
        create(client, name="a", image=str(image.pk), **{**CUSTOM, "vcpus": 0, "disk_gb": -5}), "vcpus", "disk_gb"
    )
    assert body["fields"]["vcpus"][0].startswith("Ensure this value is greater than or equal to 1")


def test_it_needs_a_flavor_or_a_custom_size(client, image):
    body = assert_bad(create(client, name="a", image=str(image.pk)), "flavor")
    assert "Give a flavor, or a custom size" in body["detail"]


def test_it_refuses_a_flavor_and_a_custom_size_together(client, image, flavor):
    body = assert_bad(create(client, name="a", image=str(image.pk), flavor=str(flavor.pk), **CUSTOM), "flavor")
    assert "not both" in body["fields"]["flavor"][0]
    assert_bad(create(client, name="a", image=str(image.pk), flavor=str(flavor.pk), vcpus=1), "flavor")


def test_it_accepts_a_custom_size_within_the_limits(client, image, settings):
    response = create(client, name="a", image=str(image.pk), **CUSTOM)
    assert response.status_code == 202, response.json()
    assert response.json()["size"]["sla_percent"] == settings.CUSTOM_SIZE_SLA_PERCENT
    assert response.json()["flavor"] is None


def test_it_names_unknown_fields(client, image, flavor):
    assert_bad(create(client, name="a", image=str(image.pk), flavor=str(flavor.pk), host="elsewhere"), "host")


@pytest.mark.parametrize(
    ("limit", "quota", "body_size"),
    [
        ("instances", {"instances": 0}, {}),
        ("vcpus", {"vcpus": 1}, {"vcpus": 2}),
        ("memory_mb", {"memory_mb": 512}, {"memory_mb": 1024}),
        ("disk_gb", {"disk_gb": 10}, {"disk_gb": 20}),
    ],
)
def test_it_names_the_quota_limit_it_would_pass(client, tenant_a, image, limit, quota, body_size):
    Quota.objects.filter(tenant=tenant_a).update(**quota)
    response = create(client, name="a", image=str(image.pk), **{**CUSTOM, **body_size})
    assert response.status_code == 403
    assert response.json()["code"] == "quota_exceeded"
    assert response.json()["detail"].startswith(f"Quota exceeded for {limit}: 0 in use + ")
    assert not Instance.objects.exists()


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "a\"b'c&d", "]]>", "x</name><name>evil"])
def test_it_keeps_a_hostile_name_as_data_and_off_the_host(
    eager, api, alice, tenant_a, host, image, flavor, use_driver, name
):
    driver_cls, recorded = recording_driver()
    use_driver(driver_cls)
    client = api(alice)
    # when
    response = create(client, name=name, image=str(image.pk), flavor=str(flavor.pk))
    # then: stored and returned exactly as given
    assert response.status_code == 202, response.json()
    instance_id = response.json()["id"]
    assert response.json()["name"] == name
    assert Instance.objects.get(pk=instance_id).name == name
    detail = client.get(f"/api/v1/instances/{instance_id}")
    assert detail.json()["name"] == name and detail.json()["state"] == "running"
    assert name in [i["name"] for i in client.get("/api/v1/instances").json()["results"]]
    # and never in the domain XML, or a volume name
    conn = connect(host.uri)
    dom = conn.lookupByUUIDString(instance_id)
    xml = dom.XMLDesc(0)
    assert dom.name() == f"inst-{instance_id}"
    for spelled in {name, escape(name), quoteattr(name)[1:-1], escape(name, {'"': "&quot;", "'": "&apos;"})}:
        assert spelled not in xml
    assert ET.fromstring(xml).findtext("name") == f"inst-{instance_id}"  # noqa: S314 - libvirt's own XML
    instance = Instance.objects.get(pk=instance_id)
    pool = conn.storagePoolLookupByName(host.storage_pool)
    assert sorted(v for v in pool.listVolumes() if not v.startswith("img-")) == expected_volumes(instance)
    # the guest sees a sanitized label; DHCP a name made of the UUID, unique on the network
    meta = json.loads(read_seed(recorded.seeds[instance_id])["meta-data"])
    label = meta["local-hostname"]
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label), label
    assert meta["instance-id"] == instance_id
    assert recorded.dhcp_names[instance.mac_address] == f"i-{instance.pk.hex}"
    assert holdings(host, instance).dhcp[0]["name"] == f"i-{instance.pk.hex}"


def test_it_gives_a_name_with_no_usable_letters_a_uuid_hostname(
    eager, api, alice, tenant_a, host, image, flavor, use_driver
):
    driver_cls, recorded = recording_driver()
    use_driver(driver_cls)
    response = create(api(alice), name="]]>", image=str(image.pk), flavor=str(flavor.pk))
    instance_id = response.json()["id"]
    meta = json.loads(read_seed(recorded.seeds[instance_id])["meta-data"])
    assert meta["local-hostname"] == f"vm-{instance_id[:8]}"


def test_it_passes_user_data_through_byte_for_byte(eager, api, alice, tenant_a, host, image, flavor, use_driver):
    driver_cls, recorded = recording_driver()
    use_driver(driver_cls)
    user_data = "#cloud-config\nruncmd:\n - echo '<b>&amp;</b>' ]]>\n"
    response = create(api(alice), name="web", image=str(image.pk), flavor=str(flavor.pk), user_data=user_data)
    assert response.status_code == 202
    assert read_seed(recorded.seeds[response.json()["id"]])["user-data"] == user_data.encode()


def test_it_refuses_user_data_over_64_kib(client, image, flavor):
    base = {"name": "a", "image": str(image.pk), "flavor": str(flavor.pk)}
    assert_bad(create(client, **base, user_data="x" * (64 * 1024 + 1)), "user_data")
    # 40,000 characters of two bytes each: under the character limit, over the byte limit
    body = assert_bad(create(client, **base, user_data="é" * 40000), "user_data")
    assert "64 KiB" in body["fields"]["user_data"][0]
    assert not Instance.objects.exists()
    assert create(client, **base, user_data="x" * (64 * 1024)).status_code == 202


def test_it_refuses_a_name_already_live_in_the_tenant(client, image, flavor):
    base = {"image": str(image.pk), "flavor": str(flavor.pk)}
    assert create(client, name="web", **base).status_code == 202
    body = assert_bad(create(client, name="web", **base), "name")
    assert body["fields"]["name"] == ["An instance with this name already exists in this tenant."]
    assert Instance.objects.count() == 1


def test_it_allows_the_same_name_in_another_tenant(client, api, charlie, tenant_b, image, flavor):
    base = {"image": str(image.pk), "flavor": str(flavor.pk)}
    assert create(client, name="web", **base).status_code == 202
    assert create(api(charlie), name="web", **base).status_code == 202


def test_it_allows_the_name_of_a_deleted_instance(eager, api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    base = {"image": str(image.pk), "flavor": str(flavor.pk)}
    first = create(client, name="web", **base).json()
    assert client.delete(f"/api/v1/instances/{first['id']}").status_code == 202
    assert client.get(f"/api/v1/instances/{first['id']}").json()["state"] == "deleted"
    # when
    second = create(client, name="web", **base)
    # then
    assert second.status_code == 202, second.json()
    assert second.json()["id"] != first["id"]
    assert client.get(f"/api/v1/instances/{second.json()['id']}").json()["state"] == "running"


def test_it_treats_another_tenants_private_image_as_unknown(client, charlie, tenant_b, image, flavor):
    theirs = Image.objects.create(
        name="Theirs", visibility="private", tenant=tenant_b, size_bytes=512, source_path="tiny.qcow2"
    )
    body = assert_bad(create(client, name="a", image=str(theirs.pk), flavor=str(flavor.pk)), "image")
    assert body["fields"]["image"] == ["Unknown image."]
    assert not Instance.objects.exists()


def test_it_builds_same_named_instances_of_two_tenants_on_one_host(
    eager, api, alice, tenant_a, charlie, tenant_b, host, image, flavor
):
    # given: DHCP host names must be unique on a libvirt network
    body = {"name": "web", "image": str(image.pk), "flavor": str(flavor.pk)}

    # when
    first = api(alice).post("/api/v1/instances", body, format="json").json()
    second = api(charlie).post("/api/v1/instances", body, format="json").json()

    # then: both run
    assert Instance.objects.get(pk=first["id"]).state == "running"
    assert Instance.objects.get(pk=second["id"]).state == "running"


@pytest.mark.parametrize("name", ["../secret_key", "/etc/passwd", "..", "a/b.qcow2", ".hidden"])
def test_it_keeps_image_files_inside_the_image_store(operator, name, settings, image):
    # the admin API refuses the name, naming the field
    response = client_for(operator).post(
        "/api/v1/admin/images", {"name": "x", "source_path": name, "size_bytes": 1}, format="json"
    )
    assert response.status_code == 400 and "source_path" in response.json()["fields"]
    # and a row written past the validators never reaches a path outside the store
    Image.objects.filter(pk=image.pk).update(source_path=name)
    image.refresh_from_db()
    if name != ".hidden":  # a dot-file is refused by the validator, yet still inside the store
        with pytest.raises(HostError):
            image_ref(image)
