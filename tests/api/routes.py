"""The API's routes, read from the URL configuration, and a row of tenant A for each tenant-scoped one.

Tests iterate over what is routed instead of over a list kept by hand, so a route added later
is tested as soon as it exists; one whose rows FACTORIES cannot make fails until a factory is added.
"""

from __future__ import annotations

import os
from base64 import b64encode
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from django.db.models import Model
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from billing.models import Invoice
from compute import security_groups
from compute import services as compute_services
from compute.models import Image, Instance, SecurityGroup, SecurityGroupRule
from compute.sizing import Size
from portal.api.viewsets import TenantScopedViewSet
from tenants import services as tenant_services
from tenants.models import AccessKey, ApiToken, Invitation, Membership, Role, SshKey
from tests.conftest import actor, make_user

API_PREFIX = "api/v1/"
SAFE_METHODS = {"get", "head", "options"}
HANDLER_METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    name: str
    view: type
    detail: bool
    methods: tuple[tuple[str, str], ...]  # (HTTP method, viewset action or handler)

    @property
    def tenant_scoped(self) -> bool:
        return issubclass(self.view, TenantScopedViewSet)

    @property
    def model(self) -> type[Model] | None:
        queryset = getattr(self.view, "queryset", None)
        return None if queryset is None else queryset.model

    @property
    def writes(self) -> list[str]:
        return [method for method, _action in self.methods if method not in SAFE_METHODS]

    def url(self, pk=None) -> str:
        return reverse(self.name, kwargs={"pk": pk}) if self.detail else reverse(self.name)


def walk(patterns: Iterable, prefix: str = "", namespace: str = "") -> Iterable[tuple[str, URLPattern, str]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        else:
            yield prefix + str(pattern.pattern), pattern, namespace


def discover(patterns: Iterable | None = None) -> list[Route]:
    """Every DRF view routed under /api/v1/, with the HTTP methods it answers."""
    routes = []
    for route, pattern, namespace in walk(get_resolver().url_patterns if patterns is None else patterns):
        view = getattr(pattern.callback, "cls", None)
        if not (route.startswith(API_PREFIX) and view):
            continue
        assert pattern.name, f"{route} has no URL name, so the API tests cannot reverse it"
        actions = getattr(pattern.callback, "actions", None)
        if actions is None:  # a plain APIView
            actions = {method: method for method in HANDLER_METHODS if hasattr(view, method)}
        initkwargs = getattr(pattern.callback, "initkwargs", {})
        routes.append(
            Route(namespace + pattern.name, view, bool(initkwargs.get("detail")), tuple(sorted(actions.items())))
        )
    return routes


# -- one row of tenant A for each tenant-scoped model ------------------------------------------


def make_membership(request, alice, tenant_a) -> Membership:
    return Membership.objects.create(user=make_user("dana@example.com"), tenant=tenant_a, role=Role.MEMBER)


def make_invitation(request, alice, tenant_a) -> Invitation:
    invitation, _token = tenant_services.invitation_create(
        actor=actor(alice, tenant_a), email="erin@example.com", role=Role.MEMBER
    )
    return invitation


def make_token(request, alice, tenant_a) -> ApiToken:
    token, _secret = tenant_services.token_create(actor=actor(alice, tenant_a), name="ci", scope=ApiToken.Scope.WRITE)
    return token


def make_access_key(request, alice, tenant_a) -> AccessKey:
    key, _secret = tenant_services.access_key_create(
        actor=actor(alice, tenant_a), name="ci", scope=ApiToken.Scope.WRITE
    )
    return key


def make_ssh_key(request, alice, tenant_a) -> SshKey:
    blob = b"".join(len(part).to_bytes(4, "big") + part for part in (b"ssh-ed25519", os.urandom(32)))
    return tenant_services.sshkey_create(
        actor=actor(alice, tenant_a), name="laptop", public_key=f"ssh-ed25519 {b64encode(blob).decode()}"
    )


def make_private_image(request, alice, tenant_a) -> Image:
    return Image.objects.create(
        name="A's golden image", visibility=Image.Visibility.PRIVATE, tenant=tenant_a, size_bytes=512
    )


def make_instance(request, alice, tenant_a) -> Instance:
    request.getfixturevalue("host")
    image, flavor = request.getfixturevalue("image"), request.getfixturevalue("flavor")
    return compute_services.instance_create(
        actor=actor(alice, tenant_a),
        request=compute_services.CreateRequest(
            name="a-web-1", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
        ),
    )


def make_security_group(request, alice, tenant_a) -> SecurityGroup:
    return security_groups.group_create(actor=actor(alice, tenant_a), name="a-web")


def make_security_group_rule(request, alice, tenant_a) -> SecurityGroupRule:
    group = make_security_group(request, alice, tenant_a)
    rule = security_groups.RuleRequest(direction="ingress", protocol="tcp", port_min=443, port_max=443)
    return security_groups.rule_add(actor=actor(alice, tenant_a), group=group, request=rule)


def make_invoice(request, alice, tenant_a) -> Invoice:
    return Invoice.objects.create(tenant=tenant_a, period=date(2026, 3, 1), currency="EUR", state=Invoice.State.ISSUED)


FACTORIES: dict[type[Model], Callable] = {
    Membership: make_membership,
    Invitation: make_invitation,
    ApiToken: make_token,
    AccessKey: make_access_key,
    SshKey: make_ssh_key,
    Image: make_private_image,
    Instance: make_instance,
    Invoice: make_invoice,
    SecurityGroup: make_security_group,
    SecurityGroupRule: make_security_group_rule,
}


def factory_hint(route: Route) -> str:
    model = route.model.__name__ if route.model else "its model (give the viewset a `queryset`)"
    return (
        f"{route.name} ({route.view.__name__}) is tenant-scoped, but tests/api/routes.py has no factory for "
        f"{model}: add one to FACTORIES that creates a row of tenant A, so the isolation tests cover the route."
    )


def missing_factories(routes: Iterable[Route]) -> list[str]:
    return sorted({factory_hint(route) for route in routes if route.tenant_scoped and route.model not in FACTORIES})
