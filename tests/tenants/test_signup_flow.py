"""A new user's way in, through the HTML pages and the API, as a browser and a script see it."""

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import Client

from tenants.models import Membership, Role, User

PASSWORD = "plum-Orchard-42-rain"
NEW_PASSWORD = "quiet-Harbour-77-snow"


def browser() -> Client:
    # A browser sends the CSRF token with every form, and the API's session auth checks it too.
    return Client(enforce_csrf_checks=True)


def submit(client: Client, url: str, data: dict):
    """GET the form (which sets the CSRF cookie), then POST it back with the token."""
    assert client.get(url).status_code == 200
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def link_in_last_mail(to: str, path: str) -> str:
    message = mail.outbox[-1]
    assert message.to == [to]
    found = re.search(rf"https?://[^/\s]+({re.escape(path)}\S+)", message.body)
    assert found, message.body
    return found.group(1)


def sign_up(client: Client, email: str) -> str:
    """Sign up and return the path of the verification link from the e-mail."""
    response = submit(client, "/accounts/signup/", {"email": email, "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302, response.content
    assert response["Location"] == "/accounts/confirm-email/"
    return link_in_last_mail(email, "/accounts/confirm-email/")


def log_in(client: Client, email: str, password: str = PASSWORD):
    return submit(client, "/accounts/login/", {"login": email, "password": password})


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def verified_user(client: Client, email: str) -> User:
    link = sign_up(client, email)
    assert client.post(link, {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}).status_code == 302
    client.logout()  # confirming logged this browser in; the tests log in themselves
    return User.objects.get(email=email)


@pytest.mark.django_db
def test_it_takes_a_new_user_from_signup_to_an_api_call():
    client = browser()

    # given: a signup, and the link the verification e-mail carries
    link = sign_up(client, "nina@example.com")
    user = User.objects.get(email="nina@example.com")

    # when: the link is opened, the address is not yet verified (mail scanners open links too)
    assert client.get(link).status_code == 200
    assert not EmailAddress.objects.get(user=user).verified
    # ... and confirming it verifies the address
    response = client.post(link, {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert response.status_code == 302
    assert EmailAddress.objects.get(user=user, email="nina@example.com").verified

    # then: confirming in the browser that signed up logs it in, and the user owns a personal tenant
    assert logged_in(client)
    mail_text = mail.outbox[-1].subject + mail.outbox[-1].body
    assert "[Cloud Portal]" in mail.outbox[-1].subject and "127.0.0.1:8000]" not in mail_text
    assert "testserver]" not in mail.outbox[-1].subject
    tenant = client.get("/api/v1/tenant").json()
    assert tenant["personal"] is True
    assert tenant["role"] == Role.OWNER
    assert Membership.objects.get(user=user, tenant_id=tenant["id"]).role == Role.OWNER

    # when: a token is created from the session, the CSRF token is required
    body = {"name": "laptop"}
    assert client.post("/api/v1/tokens", body, content_type="application/json").status_code == 403
    response = client.post(
        "/api/v1/tokens", body, content_type="application/json", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value
    )
    assert response.status_code == 201, response.json()
    secret = response.json()["token"]

    # then: a client without a session reaches the tenant with the token alone
    script = Client()
    response = script.get("/api/v1/tenant", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200, response.json()
    assert response.json()["id"] == tenant["id"]
    assert script.get("/api/v1/tenant").status_code == 401


@pytest.mark.django_db
def test_it_gives_every_new_user_a_personal_tenant_of_their_own():
    # when
    first = verified_user(browser(), "olga@example.com")
    second = verified_user(browser(), "omar@example.com")

    # then
    tenants = [
        Membership.objects.get(user=user, tenant__personal=True, role=Role.OWNER).tenant for user in (first, second)
    ]
    assert tenants[0] != tenants[1]
    assert Membership.objects.filter(tenant__in=tenants).count() == 2


@pytest.mark.django_db
def test_it_refuses_login_before_the_address_is_verified():
    client = browser()
    sign_up(client, "paul@example.com")

    # when
    response = log_in(client, "paul@example.com")

    # then: sent to "check your mail", not logged in, and the API stays closed
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert not logged_in(client)
    assert client.get("/api/v1/tenant").status_code == 401


@pytest.mark.django_db
def test_it_lets_a_user_set_a_new_password_through_the_reset_mail():
    client = browser()
    verified_user(client, "rita@example.com")

    # given: a reset requested by someone who is logged out
    response = submit(client, "/accounts/password/reset/", {"email": "rita@example.com"})
    assert response.status_code == 302
    link = link_in_last_mail("rita@example.com", "/accounts/password/reset/key/")

    # when: the link is followed and a new password given
    response = client.get(link)
    assert response.status_code == 302  # the key moves into the session, out of the URL
    form_url = response["Location"]
    response = submit(client, form_url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302, response.content

    # then: only the new password works, and the link does not work twice
    assert log_in(browser(), "rita@example.com", PASSWORD).status_code == 200
    new_session = browser()
    assert log_in(new_session, "rita@example.com", NEW_PASSWORD).status_code == 302
    assert logged_in(new_session)
    reused = browser()
    response = reused.get(link, follow=True)
    assert response.context["token_fail"] is True


@pytest.mark.django_db
def test_it_throttles_repeated_failed_logins(settings):
    # The portal limits failed logins per account, not only per IP; a smaller limit keeps this short.
    assert "/key" in settings.ACCOUNT_RATE_LIMITS["login_failed"]
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "10/m/ip,3/5m/key"}
    client = browser()
    verified_user(client, "sam@example.com")

    # given: three wrong passwords for one account
    for _ in range(3):
        response = log_in(client, "sam@example.com", "wrong-password-1")
        assert response.status_code == 200
        assert b"Too many failed login attempts" not in response.content

    # when: the right password comes next
    response = log_in(client, "sam@example.com")

    # then: it is refused too, until the window passes
    assert response.status_code == 200
    assert b"Too many failed login attempts" in response.content
    assert not logged_in(client)
