"""The hand-written bearer-token query reads exactly what the ORM would read.

tenants.tokens.TOKEN_SQL is built from model metadata for speed; if a field, a column
type or a join changes, these tests compare it field by field with the ORM's own answer.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants import services as tenant_services
from tenants.models import ApiToken, Membership, Role
from tenants.tokens import token_from_string
from tests.conftest import actor


def orm_view(token: ApiToken) -> dict:
    """Every concrete field of the token, its user and its tenant, and the holder's role, as
    the ORM loads them."""
    fresh = ApiToken.objects.select_related("user", "tenant").get(pk=token.pk)
    membership = Membership.objects.filter(user_id=fresh.user_id, tenant_id=fresh.tenant_id).first()
    return view(fresh, membership.role if membership else None)


def view(token: ApiToken, role) -> dict:
    def fields(obj) -> dict:
        return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}

    return {"token": fields(token), "user": fields(token.user), "tenant": fields(token.tenant), "role": role}


def make(alice, tenant_a, **options) -> tuple[ApiToken, str]:
    return tenant_services.token_create(actor=actor(alice, tenant_a), name="pinned", **options)


@pytest.mark.parametrize("scope", [ApiToken.Scope.WRITE, ApiToken.Scope.READ])
def test_it_reads_what_the_orm_reads(db, alice, tenant_a, scope):
    token, secret = make(alice, tenant_a, scope=scope)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(hours=1))

    loaded = token_from_string(secret)

    assert view(loaded, loaded.member_role) == orm_view(token)


def test_it_reads_a_token_whose_holder_left_the_tenant(db, alice, tenant_a, bob):
    token, secret = tenant_services.token_create(actor=actor(bob, tenant_a), name="left", scope=ApiToken.Scope.WRITE)
    Membership.objects.filter(user=bob, tenant=tenant_a).delete()

    loaded = token_from_string(secret)

    assert loaded.member_role is None
    assert view(loaded, loaded.member_role) == orm_view(token)


def test_it_reads_a_changed_role_and_a_revoked_token(db, alice, tenant_a, bob):
    token, secret = tenant_services.token_create(actor=actor(bob, tenant_a), name="r", scope=ApiToken.Scope.WRITE)
    Membership.objects.filter(user=bob, tenant=tenant_a).update(role=Role.VIEWER)
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())

    loaded = token_from_string(secret)

    assert loaded.member_role == Role.VIEWER
    assert view(loaded, loaded.member_role) == orm_view(token)


def test_it_finds_nothing_for_a_wrong_secret(db, alice, tenant_a):
    _token, secret = make(alice, tenant_a, scope=ApiToken.Scope.WRITE)
    assert token_from_string(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
