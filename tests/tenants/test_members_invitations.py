"""Inviting people into a tenant, and the rules about who may change whose role."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from tenants import services as tenant_services
from tenants.models import ApiToken, Invitation, Membership, Role
from tests.conftest import client_for, make_user, token_for


@pytest.fixture
def dave(db):
    return make_user("dave@example.com")


@pytest.fixture
def invite(alice, tenant_a, django_capture_on_commit_callbacks):
    """alice invites an address; returns the token read from the e-mail that was sent."""

    def make(email: str = "dave@example.com", role: str = Role.MEMBER) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            response = client_for(alice).post("/api/v1/invitations", {"email": email, "role": role}, format="json")
        assert response.status_code == 201, response.json()
        found = re.search(r"https?://\S+/invitations/accept/(\S+)", mail.outbox[-1].body)
        assert found, mail.outbox[-1].body
        return found.group(1)

    return make


def accept(user, token: str):
    return client_for(user).post("/api/v1/invitations/accept", {"token": token}, format="json")


def membership(user, tenant) -> Membership:
    return Membership.objects.get(user=user, tenant=tenant)


def test_it_mails_an_invitation_with_a_single_use_link(alice, tenant_a, django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(
            "/api/v1/invitations", {"email": "Dave@Example.com", "role": Role.ADMIN}, format="json"
        )

    # then: the token comes back once and travels in the e-mail; only its hash is stored
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["email"], body["role"]) == ("dave@example.com", Role.ADMIN)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["dave@example.com"]
    assert "Tenant A" in message.subject
    assert f"/invitations/accept/{body['token']}" in message.body
    invitation = Invitation.objects.get(pk=body["id"])
    assert body["token"] not in invitation.token_hash
    assert "token" not in client_for(alice).get(f"/api/v1/invitations/{body['id']}").json()


def test_it_makes_the_invited_user_a_member_with_the_invited_role(tenant_a, dave, invite):
    token = invite(role=Role.ADMIN)

    # when
    response = accept(dave, token)

    # then
    assert response.status_code == 201, response.json()
    assert response.json()["role"] == Role.ADMIN
    assert membership(dave, tenant_a).role == Role.ADMIN
    assert Invitation.objects.get(email="dave@example.com").accepted_by == dave
    assert client_for(dave).get("/api/v1/tenant").json()["id"] == str(tenant_a.pk)


def test_it_refuses_an_invitation_for_another_address(tenant_a, charlie, invite):
    token = invite()

    response = accept(charlie, token)

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["token"]
    assert "another e-mail address" in response.json()["detail"]
    assert not Membership.objects.filter(user=charlie, tenant=tenant_a).exists()
    assert Invitation.objects.get(email="dave@example.com").accepted_at is None


def test_it_refuses_a_token_used_before(tenant_a, dave, invite):
    token = invite()
    assert accept(dave, token).status_code == 201
    Membership.objects.filter(user=dave, tenant=tenant_a).delete()

    # when: the same link is used again
    response = accept(dave, token)

    # then
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["token"]
    assert not Membership.objects.filter(user=dave, tenant=tenant_a).exists()


def test_it_refuses_an_expired_invitation(tenant_a, dave, invite):
    token = invite()
    Invitation.objects.filter(email="dave@example.com").update(expires_at=timezone.now() - timedelta(seconds=1))

    response = accept(dave, token)

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["token"]
    assert "expired" in response.json()["detail"]
    assert not Membership.objects.filter(user=dave, tenant=tenant_a).exists()


def test_it_refuses_an_unknown_token(dave):
    response = accept(dave, "not-a-token")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["token"]


def test_it_refuses_a_read_only_token_accepting_an_invitation(tenant_a, dave, invite):
    # given: dave's read-only token for his own tenant, and an invitation to become admin of A
    token = invite(role=Role.ADMIN)
    own = tenant_services.tenant_create(name="Dave's", owner=dave)
    read_only = token_for(dave, own, scope=ApiToken.Scope.READ)

    # when
    response = client_for(token=read_only).post("/api/v1/invitations/accept", {"token": token}, format="json")

    # then: refused, and the invitation still works for a write
    assert response.status_code == 403, response.json()
    assert response.json()["code"] == "permission_denied"
    assert "read-only" in response.json()["detail"]
    assert not Membership.objects.filter(user=dave, tenant=tenant_a).exists()
    assert Invitation.objects.get(email="dave@example.com").accepted_at is None
    read_write = token_for(dave, own)
    response = client_for(token=read_write).post("/api/v1/invitations/accept", {"token": token}, format="json")
    assert response.status_code == 201, response.json()
    assert membership(dave, tenant_a).role == Role.ADMIN


def test_it_lets_only_admins_invite(tenant_a, bob, vera):
    for user in (bob, vera):
        response = client_for(user).post("/api/v1/invitations", {"email": "eve@example.com"}, format="json")
        assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_it_refuses_to_invite_someone_who_is_already_a_member(alice, tenant_a, bob):
    response = client_for(alice).post("/api/v1/invitations", {"email": "BOB@example.com"}, format="json")

    assert response.status_code == 409
    assert not Invitation.objects.exists()


def test_it_lets_an_owner_change_a_role(alice, tenant_a, bob):
    response = client_for(alice).patch(
        f"/api/v1/members/{membership(bob, tenant_a).pk}", {"role": Role.ADMIN}, format="json"
    )

    assert response.status_code == 200
    assert membership(bob, tenant_a).role == Role.ADMIN


def test_it_does_not_let_a_member_change_roles(alice, tenant_a, bob):
    for target in (bob, alice):
        response = client_for(bob).patch(
            f"/api/v1/members/{membership(target, tenant_a).pk}", {"role": Role.OWNER}, format="json"
        )
        assert response.status_code == 403
    assert membership(bob, tenant_a).role == Role.MEMBER
    assert client_for(bob).delete(f"/api/v1/members/{membership(alice, tenant_a).pk}").status_code == 403


def test_it_keeps_the_last_owner(alice, tenant_a):
    own = membership(alice, tenant_a)
    client = client_for(alice)

    # when / then: neither demoted nor removed
    response = client.patch(f"/api/v1/members/{own.pk}", {"role": Role.ADMIN}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert client.delete(f"/api/v1/members/{own.pk}").status_code == 409
    assert membership(alice, tenant_a).role == Role.OWNER


def test_it_lets_an_owner_step_down_once_there_is_another(alice, tenant_a, bob):
    client = client_for(alice)
    response = client.patch(f"/api/v1/members/{membership(bob, tenant_a).pk}", {"role": Role.OWNER}, format="json")
    assert response.status_code == 200

    response = client.patch(f"/api/v1/members/{membership(alice, tenant_a).pk}", {"role": Role.ADMIN}, format="json")

    assert response.status_code == 200
    assert membership(alice, tenant_a).role == Role.ADMIN


def test_it_does_not_let_an_admin_touch_owners(alice, tenant_a, bob):
    Membership.objects.filter(user=bob).update(role=Role.ADMIN)
    client = client_for(bob)
    own = membership(alice, tenant_a)

    assert client.patch(f"/api/v1/members/{own.pk}", {"role": Role.MEMBER}, format="json").status_code == 409
    assert client.delete(f"/api/v1/members/{own.pk}").status_code == 409
    response = client.patch(f"/api/v1/members/{membership(bob, tenant_a).pk}", {"role": Role.OWNER}, format="json")
    assert response.status_code == 409
    assert membership(alice, tenant_a).role == Role.OWNER
    assert membership(bob, tenant_a).role == Role.ADMIN
