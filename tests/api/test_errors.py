"""Bad input gets a JSON error that names what was wrong, and never a 500."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.permissions import AllowAny

from portal.api.permissions import IsStaff
from tenants.models import Membership, Role
from tests.api.routes import discover
from tests.conftest import client_for

ROUTES = discover()
BIG = "x" * 100_000
JUNK_BODIES = {
    "malformed": '{"name": ',
    "list": "[]",
    "string": '"hello"',
    "number": "42",
    "null": "null",
    "deeply-nested": "[" * 100_000 + "]" * 100_000,
    "huge-name": json.dumps({"name": BIG}),
    "unknown-field": json.dumps({"no_such_field": 1}),
    "nul-byte": json.dumps({"name": "a\x00b", "email": "a\x00@example.com", "token": "\x00"}),
    "wrong-types": json.dumps(
        {
            "name": {"nested": [1, {"deeper": None}]},
            "email": False,
            "role": 5,
            "token": {},
            "scope": [],
            "public_key": [],
            "expires_at": "soon",
            "image": 1.5,
            "flavor": -1,
            "vcpus": "1e9",
            "memory_mb": [],
            "ssh_key_ids": "k",
            "user_data": 7,
            "status": None,
            "visibility": {},
            "uri": 3,
            "active": "maybe",
        }
    ),
}
JUNK_QUERY = "?page=%00&page_size=-5&state=nope&image=not-a-uuid&flavor=%00&name=" + "x" * 5000
CALLS = [(route, method) for route in ROUTES for method, _action in route.methods]


def client_of(route, request):
    """Who may call the route at all: an operator for admin routes, else alice of tenant A."""
    permissions = getattr(route.view, "permission_classes", [])
    if IsStaff in permissions:
        return client_for(request.getfixturevalue("operator"))
    if AllowAny in permissions:
        return client_for(None)
    return client_for(request.getfixturevalue("alice"))


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["detail"] and body["code"]
    return body


def post(path: str, body, user):
    return client_for(user).post(path, body, format="json")


def test_it_answers_malformed_json_with_a_400(alice, tenant_a):
    response = client_for(alice).post("/api/v1/ssh-keys", '{"name": "laptop",', content_type="application/json")

    body = assert_json_error(response, 400)
    assert body["code"] == "parse_error"
    assert body["detail"].startswith("JSON parse error")


def test_it_answers_json_nested_too_deeply_with_a_400(alice, tenant_a):
    response = client_for(alice).post("/api/v1/tokens", "[" * 100_000 + "]" * 100_000, content_type="application/json")

    assert assert_json_error(response, 400)["code"] == "parse_error"


def test_it_refuses_other_media_types(alice, tenant_a):
    response = client_for(alice).post("/api/v1/tokens", {"name": "ci"})  # a multipart form

    assert assert_json_error(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        ("/api/v1/tokens", {"name": ["ci"], "scope": 5, "expires_at": "soon"}, {"name", "scope", "expires_at"}),
        ("/api/v1/ssh-keys", {"name": {"a": 1}, "public_key": ["ssh-ed25519"]}, {"name", "public_key"}),
        ("/api/v1/invitations", {"email": False, "role": []}, {"email", "role"}),
        ("/api/v1/invitations/accept", {"token": {}}, {"token"}),
        (
            "/api/v1/instances",
            {"name": "web", "image": ["x"], "vcpus": "many", "ssh_key_ids": "k"},
            {"image", "vcpus", "ssh_key_ids"},
        ),
    ],
    ids=["tokens", "ssh-keys", "invitations", "accept", "instances"],
)
def test_it_names_each_field_of_the_wrong_type(alice, tenant_a, path, body, fields):
    body = assert_json_error(post(path, body, alice), 400)

    assert body["code"] == "invalid"
    assert set(body["fields"]) == fields
    assert body["detail"].split(":")[0] in fields


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/tokens", {"name": "ci", "admin": True, "tenant": "b"}),
        ("post", "/api/v1/ssh-keys", {"name": "k", "public_key": "ssh-ed25519 AAAA", "admin": True, "tenant": "b"}),
        ("post", "/api/v1/invitations", {"email": "eve@example.com", "admin": True, "tenant": "b"}),
        ("post", "/api/v1/invitations/accept", {"token": "t", "admin": True, "tenant": "b"}),
        ("patch", "/api/v1/tenant", {"name": "A", "admin": True, "tenant": "b"}),
        ("post", "/api/v1/instances", {"name": "web", "image": "x", "admin": True, "tenant": "b"}),
    ],
    ids=["tokens", "ssh-keys", "invitations", "accept", "tenant", "instances"],
)
def test_it_names_unknown_fields(alice, tenant_a, method, path, body):
    response = getattr(client_for(alice), method)(path, body, format="json")

    body = assert_json_error(response, 400)
    assert set(body["fields"]) == {"admin", "tenant"}
    assert body["fields"]["admin"] == ["Unknown field."]


def test_it_names_unknown_fields_of_a_member_update(alice, tenant_a, bob):
    membership = Membership.objects.get(user=bob, tenant=tenant_a)

    response = client_for(alice).patch(f"/api/v1/members/{membership.pk}", {"role": "admin", "user": 1}, format="json")

    assert set(assert_json_error(response, 400)["fields"]) == {"user"}
    membership.refresh_from_db()
    assert membership.role == Role.MEMBER


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/tokens", {"name": BIG}),
        ("post", "/api/v1/ssh-keys", {"name": BIG, "public_key": "ssh-ed25519 AAAA"}),
        ("patch", "/api/v1/tenant", {"name": BIG}),
        (
            "post",
            "/api/v1/instances",
            {
                "name": BIG,
                "image": "00000000-0000-0000-0000-000000000000",
                "vcpus": 1,
                "memory_mb": 512,
                "disk_gb": 10,
                "bandwidth_mbit": 10,
                "traffic_gb": 10,
            },
        ),
    ],
    ids=["tokens", "ssh-keys", "tenant", "instances"],
)
def test_it_names_a_name_that_is_far_too_long(alice, tenant_a, method, path, body):
    response = getattr(client_for(alice), method)(path, body, format="json")

    body = assert_json_error(response, 400)
    assert "name" in body["fields"]
    assert "no more than" in body["fields"]["name"][0]


DETAIL_ROUTES = [route for route in ROUTES if route.detail]


@pytest.mark.parametrize("route", DETAIL_ROUTES, ids=[route.name for route in DETAIL_ROUTES])
@pytest.mark.parametrize("pk", ["not-a-uuid", "12345", "\x00", "0" * 300], ids=["word", "number", "nul", "long"])
def test_it_answers_a_non_uuid_id_with_a_json_404(request, tenant_a, route, pk):
    client = client_of(route, request)

    for method, _action in route.methods:
        response = getattr(client, method)(route.url(pk), {}, format="json")
        assert assert_json_error(response, 404)["code"] == "not_found", method


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v2/x", "/api/v1/tokens/", "/api/", "/api/v1/", "/api/v1/x/y/z"])
@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_it_answers_unknown_api_routes_with_a_json_404(alice, path, method):
    response = getattr(client_for(alice), method)(path)

    body = assert_json_error(response, 404)
    assert body["code"] == "not_found"


@pytest.mark.parametrize(("route", "method"), CALLS, ids=[f"{m.upper()} {r.name}" for r, m in CALLS])
def test_it_never_answers_junk_with_a_500(request, tenant_a, owned, route, method):
    """Every method of every route, fed every kind of junk: a 4xx with a JSON error, or success."""
    client = client_of(route, request)
    url = route.url(owned(route).pk if route.detail else None)
    if method == "get":
        attempts = [client.get(url + JUNK_QUERY)]
    else:
        attempts = [
            client.generic(method.upper(), url, body, content_type="application/json") for body in JUNK_BODIES.values()
        ]

    for response in attempts:
        assert response.status_code < 500, response.content[:500]
        if response.status_code >= 400:
            assert_json_error(response, response.status_code)


def test_it_answers_a_nul_byte_in_the_instance_name_filter(alice, tenant_a):
    response = client_for(alice).get("/api/v1/instances?name=%00")

    assert response.status_code == 400
    assert "name" in response.json()["fields"]


def test_it_serves_an_openapi_3_document(db):
    response = Client().get("/api/schema/?format=json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/instances", "/api/v1/tokens", "/api/v1/members/{id}", "/api/v1/quota"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    assert {"bearerToken": []} in schema["paths"]["/api/v1/instances"]["get"]["security"]


def test_it_describes_every_endpoint_without_schema_warnings(db, tmp_path):
    # Raises SchemaGenerationError on any drf-spectacular warning, and on an invalid document.
    out = tmp_path / "schema.json"
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))

    assert json.loads(out.read_text())["info"]["title"] == "Cloud Portal API"


def test_it_serves_the_api_docs_to_a_logged_in_user(alice, tenant_a):
    client = Client()
    client.force_login(alice)

    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    assert b"/api/schema/" in response.content
