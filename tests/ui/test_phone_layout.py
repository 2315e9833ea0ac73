"""Every page on a 390 px phone: the page itself never scrolls sideways, and what a customer came
for (the Create button, the catalogue's prices, each tenant tab) is on the screen.

Wide tables may scroll inside their own `.table-responsive` box; the body may not. The data is
what a real tenant has: the demo catalogue with prices, SSH keys with long fingerprints, tokens,
invoices, an activity log.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import Invoice
from compute import operations, services
from tenants import services as tenant_services
from tests.conftest import actor
from tests.ui.conftest import PHONE
from tests.ui.test_browser import Watcher, http_cookies, session_cookie, shot  # noqa: F401 (a fixture)
from tests.ui.test_tenant_pages import ed25519_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("http_cookies")]

PAGES = [
    ("home", None, "/"),
    ("catalogue", None, "/flavors/"),
    ("login", None, "/accounts/login/"),
    ("signup", None, "/accounts/signup/"),
    ("dashboard", "alice", "/instances/"),
    ("create", "alice", "/instances/new"),
    ("instance", "alice", "/instances/{pk}"),
    ("edit", "alice", "/instances/{pk}/edit"),
    ("resize", "alice", "/instances/{pk}/resize"),
    ("rebuild", "alice", "/instances/{pk}/rebuild"),
    ("snapshot", "alice", "/instances/{pk}/snapshot"),
    ("stop", "alice", "/instances/{pk}/stop"),
    ("delete", "alice", "/instances/{pk}/delete"),
    ("console", "alice", "/instances/{pk}/console"),
    ("members", "alice", "/tenant/members"),
    ("quota", "alice", "/tenant/quota"),
    ("tokens", "alice", "/tenant/tokens"),
    ("ssh-keys", "alice", "/tenant/ssh-keys"),
    ("images", "alice", "/tenant/images"),
    ("firewall", "alice", "/tenant/firewall"),
    ("billing", "alice", "/tenant/billing"),
    ("activity", "alice", "/tenant/activity"),
    ("notices", "alice", "/account/notifications"),
    ("ops", "operator", "/ops/"),
]
TENANT_PAGES = {"members", "quota", "tokens", "ssh-keys", "firewall", "billing", "activity"}
TENANT_TABS = ["Members", "Quota", "API tokens", "SSH keys", "Firewall", "Images", "Billing", "Activity"]

# The first few elements reaching past the screen's edge: what to fix when the assertion fails.
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  const inScroller = el => el.parentElement && el.parentElement.closest('.table-responsive, .overflow-x-auto');
  return [...document.body.querySelectorAll('*')]
    .filter(el => el.getBoundingClientRect().right > width + 1)
    // inside a scroller is fine, unless positioned against something outside it
    .filter(el => !inScroller(el) || getComputedStyle(el).position === 'absolute')
    .map(el => `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`
      + ` right=${Math.round(el.getBoundingClientRect().right)}`)
    .slice(0, 8);
}"""


def off(page, *locators) -> list[str]:
    """The elements (each match of each locator) not wholly inside the viewport's width."""
    width = page.viewport_size["width"]
    outside = []
    for locator in locators:
        for n in range(locator.count()):
            box = locator.nth(n).bounding_box()
            if box is None or box["x"] < 0 or box["x"] + box["width"] > width + 1:
                outside.append(f"{locator.nth(n).inner_text()!r} at {box}")
    return outside


@pytest.fixture
def tenant_with_history(alice, tenant_a, operator, host, image, flavor, make_instance):
    """A tenant as it looks after a few weeks: the demo catalogue, instances, keys, tokens, invoices."""
    call_command("seed_demo", stdout=StringIO())
    owner = actor(alice, tenant_a)
    for n in range(1, 4):
        tenant_services.sshkey_create(actor=owner, name=f"laptop-{n}", public_key=ed25519_key(n))
    tenant_services.token_create(actor=owner, name="deploy-from-ci-pipeline", scope="write")
    tenant_services.token_create(actor=owner, name="monitoring", scope="read")
    for month in (1, 2, 3):
        Invoice.objects.create(
            tenant=tenant_a,
            period=date(2026, month, 1),
            currency="EUR",
            number=f"INV-2026{month:02d}-0000{month}",
            state=Invoice.State.ISSUED,
            total=Decimal("123.45"),
        )
    instance = make_instance("web-frontend-production-1")
    stopped = make_instance("db-1")
    services.instance_stop(actor=owner, instance=stopped)
    operations.stop(stopped.pk)
    make_instance("worker-1", built=False)
    return instance


def test_it_fits_every_page_into_a_phone(chromium, live_server, settings, alice, operator, tenant_with_history):
    users = {"alice": alice, "operator": operator}
    contexts = {}
    watcher = Watcher()
    wide, off_screen = {}, {}
    for name, user_name, path in PAGES:
        if user_name not in contexts:
            contexts[user_name] = chromium.new_context(viewport=PHONE)
            if user_name:
                contexts[user_name].add_cookies([session_cookie(users[user_name], live_server, settings)])
        page = watcher.attach(contexts[user_name].new_page())
        response = page.goto(f"{live_server.url}{path.format(pk=tenant_with_history.pk)}")
        assert response.status in (200, 409), (path, response.status)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            wide[name] = (width, page.evaluate(OVERFLOWING))
        shot(page, f"{name}-phone-390")

        if name == "dashboard":
            off_screen[name] = off(page, page.locator("#content").get_by_role("link", name="Create instance"))
        if name == "create":
            off_screen[name] = off(page, page.get_by_role("button", name="Create instance"))
        if name == "catalogue":
            assert page.locator("[data-price]").count() == 5
            off_screen[name] = off(page, page.locator("[data-price]"), page.locator("[data-hourly]"))
        if name in TENANT_PAGES:
            tabs = page.locator("ul.nav-tabs")
            off_screen[name] = off(page, *(tabs.get_by_role("link", name=tab, exact=True) for tab in TENANT_TABS))
        page.close()
    for context in contexts.values():
        context.close()

    assert wide == {}
    assert {name: what for name, what in off_screen.items() if what} == {}
    assert watcher.unexpected() == ""


def test_it_fits_a_new_tokens_secret_into_a_phone(chromium, live_server, settings, alice, tenant_a):
    context = chromium.new_context(viewport=PHONE)
    context.add_cookies([session_cookie(alice, live_server, settings)])
    page = context.new_page()
    page.goto(f"{live_server.url}/tenant/tokens")

    page.get_by_label("Name").fill("deploy-from-ci-pipeline")
    page.get_by_role("button", name="Create token").click()

    assert page.locator("#token-secret").is_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"], page.evaluate(OVERFLOWING)
    assert off(page, page.get_by_role("button", name="Copy")) == []
    context.close()
