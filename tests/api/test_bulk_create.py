"""POST /api/v1/instances with `count`: N instances named from a pattern, all or none."""

import pytest
from django.test import Client

from compute.models import Host, Instance, IpAllocation
from tenants.models import Quota


def body_for(image, flavor, name="web-{n}", **extra) -> dict:
    return {"name": name, "image": str(image.pk), "flavor": str(flavor.pk), **extra}


def post(client, body, **headers):
    return client.post("/api/v1/instances", body, format="json", **headers)


def test_it_makes_count_instances_and_lists_them(api, alice, tenant_a, host, image, flavor):
    # when
    response = post(api(alice), body_for(image, flavor, count=3, generate_password=True))
    # then: 202 with the instances in the order of their numbers, each as a single create shows it
    assert response.status_code == 202, response.json()
    made = response.json()["instances"]
    assert [i["name"] for i in made] == ["web-1", "web-2", "web-3"]
    assert all(i["state"] == "building" and i["ip_address"] and i["password"] for i in made)
    assert len({i["password"] for i in made}) == 3
    assert {i["id"] for i in made} == {str(pk) for pk in Instance.objects.values_list("pk", flat=True)}


def test_it_answers_a_create_without_count_as_before(api, alice, tenant_a, host, image, flavor):
    response = post(api(alice), body_for(image, flavor, name="web-{n}"))
    assert response.status_code == 202
    assert response.json()["name"] == "web-{n}"  # a name, not a pattern
    assert "instances" not in response.json()


def test_it_answers_count_1_as_a_list_of_one(api, alice, tenant_a, host, image, flavor):
    response = post(api(alice), body_for(image, flavor, count=1))
    assert response.status_code == 202
    assert [i["name"] for i in response.json()["instances"]] == ["web-1"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"count": 2, "name": "web"}, "name"),
        ({"count": 0}, "count"),
        ({"count": 21}, "count"),
        ({"count": "many"}, "count"),
        ({"count": 2, "name": "x" * 254 + "{n}"}, "name"),
    ],
)
def test_it_names_the_field_of_a_bad_bulk_create(api, alice, tenant_a, host, image, flavor, extra, field):
    response = post(api(alice), {**body_for(image, flavor), **extra})
    assert response.status_code == 400, response.json()
    assert list(response.json()["fields"]) == [field]
    assert not Instance.objects.exists()


def test_it_lists_the_names_already_taken(api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    assert post(client, body_for(image, flavor, name="web-2")).status_code == 202
    response = post(client, body_for(image, flavor, count=3))
    assert response.status_code == 400
    assert response.json()["fields"]["name"] == ["Instances with these names already exist in this tenant: web-2."]
    assert Instance.objects.count() == 1


def test_it_refuses_a_bulk_create_over_the_quota_with_the_totals(api, alice, tenant_a, host, image, flavor):
    # given: room for 4 vCPUs; 5 instances of 1 vCPU asked for
    Quota.objects.filter(tenant=tenant_a).update(vcpus=4)
    response = post(api(alice), body_for(image, flavor, count=5))
    assert response.status_code == 403
    assert response.json()["code"] == "quota_exceeded"
    assert response.json()["detail"] == "Quota exceeded for vcpus: 0 in use + 5 requested > limit 4."
    assert not Instance.objects.exists()


def test_it_refuses_a_bulk_create_the_hosts_have_no_room_for(api, alice, tenant_a, host, image, flavor):
    # given: the host's memory is all but full: room for two of 512 MiB
    capacity = host.capacity()["memory_mb"]
    Host.objects.filter(pk=host.pk).update(memory_mb_used=capacity - 1024)
    response = post(api(alice), body_for(image, flavor, count=3))
    assert response.status_code == 409
    assert not Instance.objects.exists() and not IpAllocation.objects.exists()
    host.refresh_from_db()
    assert host.memory_mb_used == capacity - 1024


def test_it_replays_a_bulk_create_with_its_idempotency_key(api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    first = post(client, body_for(image, flavor, count=3, generate_password=True), HTTP_IDEMPOTENCY_KEY="k-1")
    again = post(client, body_for(image, flavor, count=3, generate_password=True), HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202
    assert [i["id"] for i in again.json()["instances"]] == [i["id"] for i in first.json()["instances"]]
    assert [i["password"] for i in again.json()["instances"]] == [None] * 3  # shown once only
    assert Instance.objects.count() == 3
    other = post(client, body_for(image, flavor, count=2, generate_password=True), HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 409


def test_it_lets_no_viewer_make_instances_in_bulk(api, vera, tenant_a, host, image, flavor):
    assert post(api(vera), body_for(image, flavor, count=2)).status_code == 403
    assert not Instance.objects.exists()


def test_it_documents_count_and_both_answers(db):
    document = Client().get("/api/schema/?format=json").json()
    schemas = document["components"]["schemas"]
    for shape in schemas["InstanceCreateRequest"]["oneOf"]:
        assert shape["properties"]["count"]["minimum"] == 1
        assert shape["properties"]["count"]["maximum"] == 20
        assert "count" not in shape["required"]
    answer = document["paths"]["/api/v1/instances"]["post"]["responses"]["202"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/InstanceCreateResult"}
    assert {s["$ref"] for s in schemas["InstanceCreateResult"]["oneOf"]} == {
        "#/components/schemas/InstanceCreated",
        "#/components/schemas/InstancesCreated",
    }
    assert schemas["InstancesCreated"]["required"] == ["instances"]


@pytest.mark.parametrize("count", [None, 2])
def test_it_answers_a_create_and_its_replay_as_a_read_shows_the_instances(
    api, alice, tenant_a, host, image, flavor, count
):
    # given: the answer is made from what the create wrote, not read back
    client = api(alice)
    body = body_for(image, flavor, **({"count": count} if count else {}))

    # when: created, then the same request again with its key
    first = post(client, body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post(client, body, HTTP_IDEMPOTENCY_KEY="k-1")

    # then: both answers show each instance field for field as GET does (but the password)
    assert first.status_code == again.status_code == 202, first.json()
    for answer in (first.json(), again.json()):
        for shown in answer["instances"] if count else [answer]:
            shown.pop("password")
            read = client.get(f"/api/v1/instances/{shown['id']}").json()
            assert shown == {key: read[key] for key in shown}
            assert shown["flavor_name"] == flavor.name and shown["image_name"] == image.name
