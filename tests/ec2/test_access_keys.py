"""EC2 access keys: made and revoked through the REST API and the tokens page, the secret
shown once and kept only sealed, every change audited."""

from __future__ import annotations

import pytest
from django.db import connection

from tenants import access_keys, services
from tenants.models import AccessKey, AuditEvent, Membership
from tests.conftest import actor, client_for, token_for
from tests.ec2.conftest import access_key
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db


def test_it_shows_the_secret_once_and_stores_it_only_sealed(alice, tenant_a, settings):
    # when
    response = client_for(alice).post("/api/v1/access-keys", {"name": "terraform", "scope": "read"}, format="json")
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["access_key_id"].startswith("AKIA") and len(body["access_key_id"]) == 20
    secret = body["secret_access_key"]
    assert len(secret) == 40 and body["scope"] == "read"
    key = AccessKey.objects.get(pk=body["id"])
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{AccessKey._meta.db_table}"')  # noqa: S608 - a model's table name
        assert secret not in repr(cursor.fetchall())
    assert access_keys.unseal(key.secret_sealed) == secret
    assert "secret_access_key" not in client_for(alice).get(f"/api/v1/access-keys/{key.pk}").json()
    # another SECRET_KEY cannot open it
    settings.SECRET_KEY = "another-" + "k" * 50
    assert access_keys.unseal(key.secret_sealed) is None
    assert AuditEvent.objects.filter(action="access_key.create", tenant=tenant_a, user=alice).exists()


def test_it_lets_only_admins_with_a_writable_token_make_keys(alice, bob, tenant_a):
    assert client_for(bob).post("/api/v1/access-keys", {"name": "x"}, format="json").status_code == 403
    read_only = token_for(alice, tenant_a, scope="read")
    assert client_for(token=read_only).post("/api/v1/access-keys", {"name": "x"}, format="json").status_code == 403
    assert not AccessKey.objects.exists()


def test_it_makes_and_revokes_a_key_on_the_tokens_page(alice, tenant_a):
    client = browser_client(alice)
    page = client.get("/tenant/tokens").content.decode()
    assert 'id="access-keys-title"' in page
    once = page.split('name="once" value="')[2].split('"')[0]  # the access key form's marker
    form = {"once": once, "name": "laptop", "scope": "read-write"}
    # when
    created = post(client, "/tenant/access-keys", form)
    again = post(client, "/tenant/access-keys", form)
    # then: one key, its secret on the first answer only
    assert (created.status_code, again.status_code) == (201, 409)
    key = AccessKey.objects.get(tenant=tenant_a)
    html = created.content.decode()
    secret = html.split('id="access-key-secret" value="')[1].split('"')[0]
    assert access_keys.unseal(key.secret_sealed) == secret and key.access_key_id in html
    assert secret not in client.get("/tenant/tokens").content.decode()
    assert post(client, f"/tenant/access-keys/{key.pk}/revoke").status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.filter(action="access_key.revoke", target="laptop").exists()


def test_it_hides_the_key_form_from_members(bob, tenant_a):
    client = browser_client(bob)
    assert 'id="new-access-key-title"' not in client.get("/tenant/tokens").content.decode()
    assert post(client, "/tenant/access-keys", {"name": "x", "scope": "read"}).status_code == 403


def test_it_takes_no_session_at_the_ec2_endpoint(alice, tenant_a):
    # given: a logged-in browser session, with CSRF checked as a browser's is
    client = browser_client(alice)
    client.get("/tenant/tokens")
    # when: it posts to /ec2/ without a signature
    response = client.post("/ec2/", {"Action": "DescribeInstances", "Version": "2016-11-15"})
    # then: EC2's own refusal (not a CSRF 403, not the session's tenant)
    assert response.status_code == 401
    assert b"<Code>MissingAuthenticationToken</Code>" in response.content
    assert response["Content-Type"].startswith("text/xml")


def test_it_revokes_a_members_keys_when_they_are_removed(alice, bob, tenant_a):
    key_id, _secret = access_key(bob, tenant_a)
    services.membership_remove(actor=actor(alice, tenant_a), membership=Membership.objects.get(user=bob))
    assert AccessKey.objects.get(access_key_id=key_id).revoked_at is not None
