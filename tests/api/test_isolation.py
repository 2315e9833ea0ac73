"""Every tenant-scoped route keeps tenants apart, and refuses writes to viewers and read-only tokens.

The routes are read from the URL configuration (tests/api/routes.py): a TenantScopedViewSet
routed under /api/v1/ later is covered at once, and fails until FACTORIES can make its rows.
"""

from __future__ import annotations

import pytest
from django.db.models import Model
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from portal.api.viewsets import TenantScopedViewSet
from tenants.models import ApiToken, Quota
from tests.api.routes import API_PREFIX, Route, discover, missing_factories
from tests.conftest import client_for, token_for

ROUTES = [route for route in discover() if route.tenant_scoped]
DETAIL_CALLS = [(route, method) for route in ROUTES if route.detail for method, _action in route.methods]
LIST_ROUTES = [route for route in ROUTES if not route.detail]
WRITE_CALLS = [(route, method) for route in ROUTES for method in route.writes]


def call_id(call: tuple[Route, str]) -> str:
    route, method = call
    return f"{method.upper()} {route.name}"


def retrieve_url(route: Route, obj: Model) -> str:
    """The URL that shows `obj`, from the viewset that serves `route`."""
    for other in ROUTES:
        if other.view is route.view and ("get", "retrieve") in other.methods:
            return other.url(obj.pk)
    raise AssertionError(f"{route.view.__name__} has no retrieve route")


def snapshot(obj: Model) -> dict:
    return type(obj)._base_manager.filter(pk=obj.pk).values().get()


def ids_in_list(response) -> set[str]:
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def send(client, method: str, url: str):
    return getattr(client, method)(url, {}, format="json")


# -- the safety net itself ---------------------------------------------------------------------


def test_it_finds_the_tenant_scoped_routes():
    names = {route.name for route in ROUTES}

    assert {
        "api:member-list",
        "api:member-detail",
        "api:invitation-list",
        "api:token-detail",
        "api:sshkey-detail",
        "api:image-detail",
        "api:instance-detail",
        "api:instance-start",
        "api:invoice-detail",
    } <= names
    assert {"api:flavor-list", "api:admin-host-detail"}.isdisjoint(names)
    assert ("api:instance-detail", "delete") in {(route.name, method) for route, method in WRITE_CALLS}


def test_it_has_a_factory_for_every_tenant_scoped_model():
    missing = missing_factories(ROUTES)

    assert not missing, "\n".join(missing)


def test_it_would_catch_a_new_route_without_a_factory():
    # given: a resource routed tomorrow, over a model no factory knows
    class QuotaViewSet(TenantScopedViewSet):
        queryset = Quota.objects.all()

        def list(self, request): ...

        def retrieve(self, request, pk=None): ...

    router = SimpleRouter(trailing_slash=False)
    router.register("quotas", QuotaViewSet, basename="quota-x")

    # when
    routes = discover([path(API_PREFIX, include(router.urls))])

    # then
    assert {route.name for route in routes} == {"quota-x-list", "quota-x-detail"}
    missing = missing_factories(routes)
    assert len(missing) == 2
    assert all("no factory for Quota" in hint for hint in missing)


# -- another tenant: 404 on every detail URL, absent from every list ---------------------------


@pytest.mark.parametrize(("route", "method"), DETAIL_CALLS, ids=map(call_id, DETAIL_CALLS))
def test_it_answers_404_to_another_tenant(alice, tenant_a, charlie, tenant_b, owned, route, method):
    # given: a row of tenant A, which alice sees
    obj = owned(route)
    assert client_for(alice).get(retrieve_url(route, obj)).status_code == 200
    before = snapshot(obj)

    # when: charlie asks for it, through his session and through his token
    responses = [
        send(client_for(charlie), method, route.url(obj.pk)),
        send(client_for(token=token_for(charlie, tenant_b)), method, route.url(obj.pk)),
    ]

    # then: it does not exist for him, and nothing about it changed
    for response in responses:
        assert response.status_code == 404, (response.status_code, response.content)
        assert response.json()["code"] == "not_found"
    assert snapshot(obj) == before


@pytest.mark.parametrize("route", LIST_ROUTES, ids=[route.name for route in LIST_ROUTES])
def test_it_lists_only_the_tenants_own_rows(alice, tenant_a, charlie, tenant_b, owned, route):
    obj = owned(route)
    assert str(obj.pk) in ids_in_list(client_for(alice).get(route.url()))

    assert str(obj.pk) not in ids_in_list(client_for(charlie).get(route.url()))
    assert str(obj.pk) not in ids_in_list(client_for(token=token_for(charlie, tenant_b)).get(route.url()))


# -- writes: refused to viewers and to read-only tokens ----------------------------------------


def refused_write(client, route: Route, method: str, obj: Model) -> str:
    model = type(obj)
    count, before = model._base_manager.count(), snapshot(obj)

    response = send(client, method, route.url(obj.pk if route.detail else None))

    assert response.status_code == 403, (response.status_code, response.content)
    assert response.json()["code"] == "permission_denied"
    assert model._base_manager.count() == count
    assert snapshot(obj) == before
    return response.json()["detail"]


@pytest.mark.parametrize(("route", "method"), WRITE_CALLS, ids=map(call_id, WRITE_CALLS))
def test_it_refuses_writes_through_a_read_only_token(alice, tenant_a, owned, route, method):
    obj = owned(route)
    client = client_for(token=token_for(alice, tenant_a, scope=ApiToken.Scope.READ))

    detail = refused_write(client, route, method, obj)

    assert detail == "This API token is read-only."


@pytest.mark.parametrize(("route", "method"), WRITE_CALLS, ids=map(call_id, WRITE_CALLS))
def test_it_refuses_writes_by_a_viewer(alice, tenant_a, vera, owned, route, method):
    obj = owned(route)

    detail = refused_write(client_for(vera), route, method, obj)

    assert "role in the tenant" in detail
