"""API tokens: shown once, stored hashed, and dead once revoked, expired or orphaned."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import ApiToken, Membership
from tenants.tokens import hash_secret
from tests.conftest import client_for, token_for


def create_token(client, **body):
    return client.post("/api/v1/tokens", {"name": "ci", **body}, format="json")


def test_it_shows_the_secret_once_and_stores_only_its_hash(alice, tenant_a):
    client = client_for(alice)

    # when
    response = create_token(client)

    # then: the full token comes back once...
    assert response.status_code == 201, response.json()
    created = response.json()
    secret = created["token"]
    assert secret.startswith(f"cpt_{created['prefix']}_")
    # ... never again, in the list or the detail
    listed = client.get("/api/v1/tokens").json()["results"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0]
    detail = client.get(f"/api/v1/tokens/{created['id']}").json()
    assert "token" not in detail
    assert secret not in str(listed) + str(detail)
    # ... and the database holds the hash of the secret part, not the secret
    row = ApiToken.objects.filter(pk=created["id"]).values().get()
    assert row["secret_hash"] == hash_secret(secret.split("_", 2)[2])
    assert not any(secret.split("_", 2)[2] in str(value) for value in row.values())


def test_it_authenticates_with_the_token_for_its_tenant(alice, tenant_a):
    response = client_for(token=token_for(alice, tenant_a)).get("/api/v1/tenant")

    assert response.status_code == 200
    assert response.json()["id"] == str(tenant_a.pk)


def test_it_refuses_a_token_with_a_wrong_secret(alice, tenant_a):
    prefix = token_for(alice, tenant_a).split("_")[1]

    response = client_for(token=f"cpt_{prefix}_{'x' * 43}").get("/api/v1/tenant")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "raw",
    ["", "cpt", "cpt__", "cpt_\x00_x", "cpt_abc_\x00", "cpt_%00_x", "x" * 10_000, "cpt_" + "a" * 12 + "_"],
    ids=["empty", "scheme-only", "no-parts", "nul-in-prefix", "nul-in-secret", "quoted-nul", "long", "no-secret"],
)
def test_it_refuses_malformed_tokens(alice, tenant_a, raw):
    token_for(alice, tenant_a)

    response = client_for(None).get("/api/v1/tenant", HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_it_refuses_a_revoked_token(alice, tenant_a):
    # given
    secret = token_for(alice, tenant_a)
    token = ApiToken.objects.get(prefix=secret.split("_")[1])
    assert client_for(token=secret).get("/api/v1/tenant").status_code == 200

    # when
    response = client_for(alice).delete(f"/api/v1/tokens/{token.pk}")

    # then: it stays listed as history, but no longer opens anything
    assert response.status_code == 204
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert client_for(alice).get(f"/api/v1/tokens/{token.pk}").json()["revoked_at"] is not None
    response = client_for(token=secret).get("/api/v1/tenant")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_it_refuses_an_expired_token(alice, tenant_a):
    # given: a token whose end date has come
    response = create_token(client_for(alice), expires_at=(timezone.now() + timedelta(days=1)).isoformat())
    assert response.status_code == 201, response.json()
    secret = response.json()["token"]
    assert client_for(token=secret).get("/api/v1/tenant").status_code == 200
    ApiToken.objects.filter(pk=response.json()["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))

    # when
    response = client_for(token=secret).get("/api/v1/tenant")

    # then
    assert response.status_code == 401


def test_it_records_when_a_token_was_last_used(alice, tenant_a):
    secret = token_for(alice, tenant_a)
    token = ApiToken.objects.get(prefix=secret.split("_")[1])
    assert token.last_used_at is None

    # when
    before = timezone.now()
    client_for(token=secret).get("/api/v1/quota")

    # then
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_at >= before
    listed = client_for(alice).get(f"/api/v1/tokens/{token.pk}").json()
    assert listed["last_used_at"] is not None


def test_it_lets_a_read_only_token_read_but_not_write(alice, tenant_a):
    client = client_for(token=token_for(alice, tenant_a, scope=ApiToken.Scope.READ))

    assert client.get("/api/v1/tokens").status_code == 200
    response = create_token(client)

    assert response.status_code == 403
    assert response.json() == {"detail": "This API token is read-only.", "code": "permission_denied"}
    assert ApiToken.objects.count() == 1


def test_it_stops_the_token_of_a_removed_member(alice, tenant_a, bob):
    # given
    secret = token_for(bob, tenant_a)
    assert client_for(token=secret).get("/api/v1/tenant").status_code == 200
    membership = Membership.objects.get(user=bob, tenant=tenant_a)

    # when
    assert client_for(alice).delete(f"/api/v1/members/{membership.pk}").status_code == 204

    # then
    assert client_for(token=secret).get("/api/v1/tenant").status_code == 401
    assert client_for(token=secret).get("/api/v1/ssh-keys").status_code == 401


def test_it_needs_the_admin_role_to_create_a_token(alice, tenant_a, bob):
    response = create_token(client_for(bob))

    assert response.status_code == 403
    assert "admin" in response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_it_refuses_an_expiry_in_the_past(alice, tenant_a):
    response = create_token(client_for(alice), expires_at=(timezone.now() - timedelta(minutes=1)).isoformat())

    assert response.status_code == 400
    body = response.json()
    assert list(body["fields"]) == ["expires_at"]
    assert body["detail"].startswith("expires_at:")
    assert not ApiToken.objects.exists()


def test_it_refuses_an_unknown_scope(alice, tenant_a):
    response = create_token(client_for(alice), scope="root")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["scope"]
