"""In Chromium: the price next to the Create and Resize buttons is the chosen flavor's own price,
the one on its card and in the catalogue, not what a custom size of the same shape would cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from billing import prices
from billing.models import FlavorPrice
from compute.models import Flavor
from compute.sizing import Size
from tests.ui.conftest import DESKTOP

pytestmark = pytest.mark.django_db(transaction=True)

# name, vcpus, memory MiB, disk GiB, hourly, monthly cap: seed_demo's catalogue
CATALOGUE = [
    ("s1.nano", 1, 512, 10, "0.0060", "3.99"),
    ("s1.medium", 2, 2048, 50, "0.0190", "11.99"),
    ("c1.xlarge", 8, 16384, 200, "0.1040", "65.99"),
]


@pytest.fixture
def priced(flavor):
    """The catalogue's flavors with their prices (and the test flavor's), by name: 'N.NN EUR'."""
    FlavorPrice.objects.create(flavor=flavor, hourly=Decimal("0.0095"), monthly_cap=Decimal("5.99"))
    shown = {flavor.name: "5.99 EUR"}
    for name, vcpus, memory, disk, hourly, cap in CATALOGUE:
        f = Flavor.objects.create(
            name=name, vcpus=vcpus, memory_mb=memory, disk_gb=disk, bandwidth_mbit=100, traffic_gb=1000
        )
        FlavorPrice.objects.create(flavor=f, hourly=Decimal(hourly), monthly_cap=Decimal(cap))
        # the fault this guards against: the same shape priced as a custom size costs otherwise
        assert prices.estimate_monthly(Size.of_flavor(f)) != Decimal(cap)
        shown[name] = f"{cap} EUR"
    return shown


def logged_in_page(chromium, live_server, settings, user):
    settings.SESSION_COOKIE_SECURE = False  # the live server speaks plain http
    client = Client()
    client.force_login(user)
    context = chromium.new_context(viewport=DESKTOP)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def card_price(page, name: str) -> str:
    card = page.locator("label.choice-card").filter(has_text=name)
    return card.locator("span.fw-semibold").nth(1).inner_text()


def summary_price(page):
    return page.locator("#price-summary [data-price]")


def test_it_shows_each_flavors_own_price_next_to_the_create_button(
    chromium, live_server, settings, alice, tenant_a, image, priced
):
    from playwright.sync_api import expect

    page, errors = logged_in_page(chromium, live_server, settings, alice)
    page.goto(f"{live_server.url}/instances/new")

    # the first flavor is chosen when the page opens: its price, rendered by the server
    chosen = page.locator("input[name=flavor]:checked").get_attribute("value")
    first = Flavor.objects.get(pk=chosen).name
    expect(summary_price(page)).to_have_text(priced[first])
    # then each card chosen in turn: the summary, refreshed by htmx, says what the card says
    for name, price in priced.items():
        page.locator("label.choice-card").filter(has_text=name).click()
        assert card_price(page, name) == price
        expect(summary_price(page)).to_have_text(price)
    assert errors == []


def test_it_shows_each_flavors_own_price_next_to_the_resize_button(
    chromium, live_server, settings, alice, flavor, priced, make_instance
):
    from playwright.sync_api import expect

    instance = make_instance()  # of the test flavor
    page, errors = logged_in_page(chromium, live_server, settings, alice)
    page.goto(f"{live_server.url}/instances/{instance.pk}/resize")

    # its own flavor is chosen when the page opens
    expect(summary_price(page)).to_have_text(priced[flavor.name])
    for name in ["c1.xlarge", "s1.nano", "s1.medium", flavor.name]:
        page.locator("label.choice-card").filter(has_text=name).click()
        assert card_price(page, name) == priced[name]
        expect(summary_price(page)).to_have_text(priced[name])
    assert errors == []
