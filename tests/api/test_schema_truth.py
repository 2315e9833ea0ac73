"""The OpenAPI document and the API agree: error answers, strict bodies, cursor pages, PATCHes."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from compute import services as compute_services
from compute.models import Instance
from compute.sizing import Size
from tenants.models import Membership
from tests.conftest import actor, client_for

ERROR_REF = {"$ref": "#/components/schemas/ApiError"}


@pytest.fixture
def document(db) -> dict:
    return Client().get("/api/schema/?format=json").json()


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield f"{method.upper()} {path}", method, operation


def test_it_documents_the_error_body_of_every_operation(document):
    for label, method, operation in operations(document):
        responses = operation["responses"]
        expected = {"401", "503"} | ({"400", "409", "413", "415"} if method in {"post", "put", "patch"} else set())
        assert expected <= set(responses), label
        for status, response in responses.items():
            if status >= "400":
                assert response["content"]["application/json"]["schema"] == ERROR_REF, (label, status)
        assert responses["503"]["headers"]["Retry-After"]["required"] is True, label
    error = document["components"]["schemas"]["ApiError"]
    assert set(error["properties"]) == {"detail", "code", "fields"}
    assert set(error["required"]) == {"detail", "code"}


def test_it_says_request_bodies_take_no_other_fields(document):
    schemas = document["components"]["schemas"]
    bodies = [schemas[name] for name in schemas if name.endswith("Request")]
    assert bodies
    for body in bodies:
        for shape in body.get("oneOf", [body]):
            assert shape["additionalProperties"] is False, body


def test_it_documents_count_as_absent_from_cursor_pages(document):
    page = document["components"]["schemas"]["InstancePage"]
    assert "count" in page["properties"]
    assert "count" not in page["required"]


def test_it_says_and_does_that_a_member_patch_needs_a_role(document, alice, tenant_a, bob):
    body = document["paths"]["/api/v1/members/{id}"]["patch"]["requestBody"]
    assert body["required"] is True
    assert document["components"]["schemas"]["MemberUpdateRequest"]["required"] == ["role"]
    membership = Membership.objects.get(user=bob, tenant=tenant_a)

    response = client_for(alice).patch(f"/api/v1/members/{membership.pk}", {}, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["role"]


def make_instances(request, alice, tenant_a, count: int) -> None:
    request.getfixturevalue("host")
    image, flavor = request.getfixturevalue("image"), request.getfixturevalue("flavor")
    for n in range(count):
        compute_services.instance_create(
            actor=actor(alice, tenant_a),
            request=compute_services.CreateRequest(
                name=f"web-{n}", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
            ),
        )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [b64("x=1"), b64("o=1"), b64("r=1"), b64("o=2&r=1"), b64("p=2026-01-01T00:00:00Z"), "eA==:forged"],
    ids=["no-keys", "offset", "reverse", "offset-reverse", "position", "bad-signature"],
)
def test_it_answers_every_forged_cursor_with_a_400_naming_it(request, alice, tenant_a, cursor):
    make_instances(request, alice, tenant_a, 3)

    response = client_for(alice).get("/api/v1/instances", {"cursor": cursor, "page_size": 1})

    assert response.status_code == 400, response.json()
    assert list(response.json()["fields"]) == ["cursor"]


def test_it_follows_its_own_cursors_both_ways(request, alice, tenant_a):
    make_instances(request, alice, tenant_a, 3)
    client = client_for(alice)

    first = client.get("/api/v1/instances", {"cursor": "", "page_size": 2}).json()
    second = client.get(first["next"]).json()
    back = client.get(second["previous"]).json()

    assert "count" not in first
    assert [row["id"] for row in back["results"]] == [row["id"] for row in first["results"]]
    assert len(second["results"]) == 1 == Instance.objects.count() - 2


@pytest.mark.parametrize("page_size", ["0", "-1", "two", "1.5", ""])
def test_it_refuses_a_page_size_that_is_no_whole_number_from_one(alice, tenant_a, page_size):
    response = client_for(alice).get("/api/v1/tokens", {"page_size": page_size})

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["page_size"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": 5}, "name"), ({"name": "ci", "scope": 1}, "scope"), ({"name": "ci", "expires_at": 1}, "expires_at")],
)
def test_it_refuses_a_value_of_another_json_type(alice, tenant_a, body, field):
    response = client_for(alice).post("/api/v1/tokens", body, format="json")

    assert response.status_code == 400
    assert response.json()["fields"][field] == [
        "Must be a string.",
    ]


@pytest.mark.parametrize("query", ["image=", "flavor=", "state="])
def test_it_refuses_an_empty_instance_filter(alice, tenant_a, query):
    response = client_for(alice).get(f"/api/v1/instances?{query}")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == [query[:-1]]
