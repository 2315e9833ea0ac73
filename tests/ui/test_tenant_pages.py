"""The tenant's pages: members and invitations, quota, API tokens, SSH keys, billing."""

from __future__ import annotations

import base64
import struct
from datetime import date
from decimal import Decimal

import pytest
from django.core import mail

from billing.models import Invoice
from tenants.models import ApiToken, Invitation, Membership, Role, SshKey
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db


def ed25519_key(seed: int = 1) -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} me@laptop"


def field_errors(response, field: str) -> str:
    html = response.content.decode()
    marker = f'id="id_{field}-errors"'
    return html.split(marker)[1].split("</div>")[0] if marker in html else ""


# -- members and invitations -------------------------------------------------------------------


def test_it_invites_by_e_mail_and_revokes(alice, tenant_a, django_capture_on_commit_callbacks):
    client = browser_client(alice)

    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "/tenant/invitations", {"email": "dora@example.com", "role": "member"})

    assert response.status_code == 302
    invitation = Invitation.objects.get(tenant=tenant_a, email="dora@example.com")
    assert mail.outbox[-1].to == ["dora@example.com"]
    assert "dora@example.com" in client.get("/tenant/members").content.decode()

    again = post(client, "/tenant/invitations", {"email": "dora@example.com", "role": "member"})
    assert again.status_code == 400 and "already has an open invitation" in field_errors(again, "email")

    assert post(client, f"/tenant/invitations/{invitation.pk}/revoke").status_code == 302
    assert not Invitation.objects.filter(pk=invitation.pk).exists()


def test_it_changes_roles_and_keeps_one_owner(alice, tenant_a, bob):
    client = browser_client(alice)
    bob_membership = Membership.objects.get(user=bob, tenant=tenant_a)
    alice_membership = Membership.objects.get(user=alice, tenant=tenant_a)

    post(client, f"/tenant/members/{bob_membership.pk}/role", {"role": "admin"})
    last_owner = post(client, f"/tenant/members/{alice_membership.pk}/role", {"role": "member"}, follow=True)

    assert Membership.objects.get(pk=bob_membership.pk).role == Role.ADMIN
    assert "A tenant needs at least one owner" in last_owner.content.decode()
    assert Membership.objects.get(pk=alice_membership.pk).role == Role.OWNER

    assert post(client, f"/tenant/members/{bob_membership.pk}/remove").status_code == 302
    assert not Membership.objects.filter(pk=bob_membership.pk).exists()


def test_it_leaves_member_management_to_admins(bob, tenant_a, alice):
    client = browser_client(bob)
    page = client.get("/tenant/members").content.decode()
    assert "Send invitation" not in page and "alice@example.com" in page

    refused = post(client, "/tenant/invitations", {"email": "eve@example.com", "role": "member"})
    assert refused.status_code == 403 and "needs the admin role" in refused.content.decode()
    owner = Membership.objects.get(user=alice, tenant=tenant_a)
    assert post(client, f"/tenant/members/{owner.pk}/remove").status_code == 403
    assert not Invitation.objects.exists()


def test_it_shows_quota_and_usage(alice, make_instance):
    make_instance()

    page = browser_client(alice).get("/tenant/quota").content.decode()

    assert 'data-quota="instances">1 ' in page and 'data-quota="memory_mb">0.5 of 40 GiB<' in page


# -- API tokens --------------------------------------------------------------------------------


def test_it_shows_a_new_tokens_secret_once(alice, tenant_a, api):
    client = browser_client(alice)

    created = post(client, "/tenant/tokens", {"name": "ci", "scope": "read", "expires_on": ""})

    assert created.status_code == 201
    token = ApiToken.objects.get(tenant=tenant_a, name="ci")
    secret = created.content.decode().split('id="token-secret" value="')[1].split('"')[0]
    assert secret.startswith(f"cpt_{token.prefix}_")
    assert api(token=secret).get("/api/v1/tenant").status_code == 200
    assert secret not in client.get("/tenant/tokens").content.decode()  # never again

    assert post(client, f"/tenant/tokens/{token.pk}/revoke").status_code == 302
    assert api(token=secret).get("/api/v1/tenant").status_code == 401


def test_it_makes_one_token_when_the_same_form_is_sent_twice(alice, tenant_a):
    # given: the form as the page renders it, with its marker
    client = browser_client(alice)
    page = client.get("/tenant/tokens").content.decode()
    once = page.split('name="once" value="')[1].split('"')[0]
    form = {"once": once, "name": "ci", "scope": "read", "expires_on": ""}
    # when: sent, then sent again (a reload of the answer page)
    first = post(client, "/tenant/tokens", form)
    again = post(client, "/tenant/tokens", form)
    # then: one token; the second answer says why and shows no secret
    assert (first.status_code, again.status_code) == (201, 409)
    assert ApiToken.objects.filter(tenant=tenant_a).count() == 1
    assert "already sent" in again.content.decode()
    assert 'id="token-secret"' not in again.content.decode()
    # and the page after it offers a fresh form
    assert f'value="{once}"' not in again.content.decode()


def test_a_refused_token_form_can_be_sent_again_corrected(alice, tenant_a):
    client = browser_client(alice)
    form = {"once": "marker-1", "name": "ci", "scope": "read", "expires_on": "2001-01-01"}
    assert post(client, "/tenant/tokens", form).status_code == 400

    response = post(client, "/tenant/tokens", {**form, "expires_on": ""})

    assert response.status_code == 201


def test_it_refuses_a_token_that_expired_before_it_was_made(alice, tenant_a):
    response = post(
        browser_client(alice), "/tenant/tokens", {"name": "old", "scope": "read", "expires_on": "2001-01-01"}
    )

    assert response.status_code == 400 and "today or a later day" in field_errors(response, "expires_on")
    assert not ApiToken.objects.filter(tenant=tenant_a).exists()


def test_it_leaves_tokens_to_admins(bob, tenant_a):
    response = post(browser_client(bob), "/tenant/tokens", {"name": "mine", "scope": "read"})

    assert response.status_code == 403
    assert not ApiToken.objects.filter(tenant=tenant_a).exists()


# -- SSH keys ----------------------------------------------------------------------------------


def test_it_adds_and_deletes_ssh_keys_with_errors_at_the_field(bob, tenant_a):
    client = browser_client(bob)

    broken = post(client, "/tenant/ssh-keys", {"name": "laptop", "public_key": "ssh-ed25519 not*base64"})
    assert broken.status_code == 400 and "not valid base64" in field_errors(broken, "public_key")

    added = post(client, "/tenant/ssh-keys", {"name": "laptop", "public_key": ed25519_key()})
    assert added.status_code == 302
    key = SshKey.objects.get(tenant=tenant_a, name="laptop")

    twice = post(client, "/tenant/ssh-keys", {"name": "other", "public_key": ed25519_key()})
    assert twice.status_code == 400 and "already registered" in field_errors(twice, "public_key")

    assert post(client, f"/tenant/ssh-keys/{key.pk}/delete").status_code == 302
    assert not SshKey.objects.filter(tenant=tenant_a).exists()


def test_it_offers_the_tenants_keys_when_creating(alice, tenant_a, host, image):
    post(browser_client(alice), "/tenant/ssh-keys", {"name": "laptop", "public_key": ed25519_key(7)})

    page = browser_client(alice).get("/instances/new").content.decode()

    assert "laptop" in page and SshKey.objects.get(name="laptop").fingerprint in page


# -- another tenant's rows, billing --------------------------------------------------------------


def test_it_gives_another_tenant_404_on_every_row(alice, tenant_a, charlie, tenant_b, bob):
    post(browser_client(alice), "/tenant/ssh-keys", {"name": "laptop", "public_key": ed25519_key(3)})
    post(browser_client(alice), "/tenant/tokens", {"name": "ci", "scope": "read"})
    post(browser_client(alice), "/tenant/invitations", {"email": "dora@example.com", "role": "member"})
    client = browser_client(charlie)
    membership = Membership.objects.get(user=bob, tenant=tenant_a)

    for url in [
        f"/tenant/ssh-keys/{SshKey.objects.get().pk}/delete",
        f"/tenant/tokens/{ApiToken.objects.get(tenant=tenant_a).pk}/revoke",
        f"/tenant/invitations/{Invitation.objects.get().pk}/revoke",
        f"/tenant/members/{membership.pk}/role",
        f"/tenant/members/{membership.pk}/remove",
    ]:
        assert post(client, url, {"role": "owner"}).status_code == 404, url
    assert SshKey.objects.count() == 1 and Membership.objects.get(pk=membership.pk).role == Role.MEMBER


def test_it_shows_owners_the_month_so_far_and_their_invoices(alice, bob, tenant_a):
    # given: an issued invoice (drafts stay with operators)
    issued = Invoice.objects.create(
        tenant=tenant_a,
        period=date(2026, 3, 1),
        currency="EUR",
        number="INV-202603-00001",
        state=Invoice.State.ISSUED,
        total=Decimal("12.34"),
    )
    Invoice.objects.create(tenant=tenant_a, period=date(2026, 4, 1), currency="EUR")

    page = browser_client(alice).get("/tenant/billing")

    html = page.content.decode()
    assert page.status_code == 200 and "This month so far" in html
    assert "INV-202603-00001" in html and "12.34 EUR" in html
    assert f"/api/v1/invoices/{issued.pk}/pdf" in html and f"/api/v1/invoices/{issued.pk}/csv" in html
    assert html.count("<td>INV-") == 1
    # money is the owner's: a member is refused
    assert browser_client(bob).get("/tenant/billing").status_code == 403


def test_it_sends_anonymous_visitors_to_log_in(db):
    for url in ["/instances/", "/instances/new", "/tenant/members", "/tenant/tokens", "/ops/"]:
        response = browser_client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
