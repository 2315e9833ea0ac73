"""Tenant names go into e-mail subjects: names with line breaks are refused, subjects are made
header-safe anyway, and an invitation is saved only with its e-mail sent."""

import socket

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from tenants import services
from tenants.models import AuditEvent, Invitation, Tenant
from tests.conftest import client_for

# (The API trims whitespace at either end, so a trailing line break alone is trimmed, not refused.)
BAD_NAMES = ["Evil\r\nBcc: eve@example.com", "two\nlines", "tab\there", "ne\x85l", "sep\u2028x", "\x7f"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_it_refuses_a_tenant_name_with_control_characters(alice, tenant_a, name):
    response = client_for(alice).patch("/api/v1/tenant", {"name": name}, format="json")

    assert response.status_code == 400, response.json()
    body = response.json()
    assert list(body["fields"]) == ["name"]
    assert "Control characters" in body["fields"]["name"][0]
    tenant_a.refresh_from_db()
    assert tenant_a.name == "Tenant A"


def test_it_accepts_a_name_in_any_script(alice, tenant_a):
    response = client_for(alice).patch("/api/v1/tenant", {"name": "Équipe 東京 — Ops"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "Équipe 東京 — Ops"


@pytest.mark.parametrize("name", [*BAD_NAMES[:2], "trailing\n"])
def test_it_refuses_such_a_name_in_the_services_too(alice, name):
    with pytest.raises(ValidationError) as raised:
        services.tenant_create(name=name, owner=alice)

    assert list(raised.value.message_dict) == ["name"]
    assert not Tenant.objects.filter(name=name).exists()


def test_it_mails_a_one_line_subject_for_a_name_saved_before_the_rule(alice, tenant_a):
    # given: a name with a line break, stored before names were checked
    Tenant.objects.filter(pk=tenant_a.pk).update(name="Old\r\nBcc: eve@example.com")

    # when
    response = client_for(alice).post("/api/v1/invitations", {"email": "dave@example.com"}, format="json")

    # then: the invitation and its e-mail, with the name on one line
    assert response.status_code == 201, response.json()
    assert Invitation.objects.filter(tenant=tenant_a, email="dave@example.com").exists()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "You are invited to Old Bcc: eve@example.com"
    assert message.to == ["dave@example.com"]
    assert "Bcc" not in message.message()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_saves_no_invitation_when_its_mail_cannot_be_sent(alice, tenant_a, settings, closed_port):
    # given: a mail server that refuses connections
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", closed_port, 5

    # when
    response = client_for(alice).post("/api/v1/invitations", {"email": "dave@example.com"}, format="json")

    # then: a 503 to retry, and no row without its e-mail
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "unavailable"
    assert int(response["Retry-After"]) > 0
    assert not Invitation.objects.filter(email="dave@example.com").exists()
    assert not AuditEvent.objects.filter(action="invitation.create").exists()

    # and once mail works again, the same invitation goes through
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    response = client_for(alice).post("/api/v1/invitations", {"email": "dave@example.com"}, format="json")
    assert response.status_code == 201, response.json()
    assert len(mail.outbox) == 1
