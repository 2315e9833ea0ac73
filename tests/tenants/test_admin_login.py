"""The admin's login page is throttled like the portal's own login: many wrong passwords for an
account, and the right one is refused too for a while."""

import pytest
from django.test import Client

from tests.conftest import make_user

WRONG = "not-the-password"
RIGHT = "correct horse battery"  # what tests.conftest.make_user sets


def admin_login(client: Client, username: str, password: str):
    client.get("/admin/login/")
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.django_db
def test_it_lets_an_operator_in_with_the_right_password():
    make_user("ops@example.com", staff=True)
    client = Client(enforce_csrf_checks=True)

    response = admin_login(client, "ops@example.com", RIGHT)

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert logged_in(client)


@pytest.mark.django_db
def test_it_refuses_the_right_password_after_twelve_wrong_ones():
    make_user("ops@example.com", staff=True)
    client = Client(enforce_csrf_checks=True)

    # given: twelve wrong passwords for the operator's account
    answers = [admin_login(client, "ops@example.com", WRONG) for _ in range(12)]
    assert all(response.status_code == 200 for response in answers)
    assert b"Too many failed login attempts" in answers[-1].content

    # when: the right password comes next, even from another client
    response = admin_login(Client(enforce_csrf_checks=True), "ops@example.com", RIGHT)

    # then: refused, until the window passes
    assert response.status_code == 200
    assert b"Too many failed login attempts" in response.content
    assert not logged_in(client)


@pytest.mark.django_db
def test_it_shares_its_count_with_the_portal_login(settings):
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "100/m/ip,3/5m/key"}
    make_user("ops@example.com", staff=True)
    client = Client(enforce_csrf_checks=True)
    client.get("/accounts/login/")
    for _ in range(3):
        client.post(
            "/accounts/login/",
            {"login": "ops@example.com", "password": WRONG, "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
        )

    response = admin_login(client, "ops@example.com", RIGHT)

    assert b"Too many failed login attempts" in response.content
    assert not logged_in(client)
