"""What anyone sees: the catalogue with prices and SLA, and allauth's pages in the portal's layout."""

from __future__ import annotations

import pytest

from tests.conftest import make_user
from tests.ui.conftest import browser_client

pytestmark = pytest.mark.django_db


def test_it_shows_the_flavor_catalogue_to_anyone(flavor):
    for url in ["/", "/flavors/"]:
        page = browser_client().get(url).content.decode()

        assert flavor.name in page and "99.9 %" in page and "512 MiB" in page, url
        assert "data-price" in page and "Sign up" in page, url


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("/accounts/signup/", "Sign Up"),
        ("/accounts/login/", "Sign In"),
        ("/accounts/password/reset/", "Password Reset"),
        ("/accounts/confirm-email/", "Verify Your Email Address"),
    ],
)
def test_it_shows_allauths_pages_in_the_portals_layout(url, text):
    page = browser_client().get(url)

    html = page.content.decode()
    assert page.status_code == 200 and text in html
    assert "vendor/bootstrap/css/bootstrap.min.css" in html and "entrance-card" in html
    assert "Menu:" not in html  # allauth's own unstyled layout


def test_it_puts_a_login_error_next_to_the_form(db):
    client = browser_client()
    client.get("/accounts/login/")

    page = client.post(
        "/accounts/login/",
        {"login": "nobody@example.com", "password": "wrong", "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
    )

    assert page.status_code == 200 and 'class="alert alert-danger"' in page.content.decode()


def test_it_takes_each_signed_in_person_to_their_own_start_page(alice, tenant_a, operator):
    assert browser_client(alice).get("/")["Location"] == "/instances/"
    assert browser_client(operator).get("/")["Location"] == "/ops/"

    stranger = browser_client(make_user("nomad@example.com")).get("/")
    assert stranger.status_code == 200 and "belong to no tenant" in stranger.content.decode()


def test_it_shows_tenant_links_only_to_members_of_a_tenant(operator, alice, tenant_a):
    ops_page = browser_client(operator).get("/ops/").content.decode()
    tenant_page = browser_client(alice).get("/instances/").content.decode()

    assert 'href="/instances/new"' not in ops_page and 'href="/ops/"' in ops_page
    assert 'href="/instances/new"' in tenant_page and 'href="/ops/"' not in tenant_page
