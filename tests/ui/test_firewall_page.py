"""The Firewall page and the instance page's Firewall card in Chromium: a customer makes a
security group, adds a rule (a wrong one first, which is shown next to its field and keeps what
was typed), then puts an instance into the group and takes it out again."""

from __future__ import annotations

import pytest

from compute.models import SecurityGroup
from tests.ui.conftest import DESKTOP
from tests.ui.test_browser import Watcher, http_cookies, session_cookie, shot  # noqa: F401 (http_cookies: a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.usefixtures("http_cookies")
def test_it_makes_a_group_with_a_rule_and_attaches_it_to_an_instance(
    chromium, live_server, settings, alice, tenant_a, make_instance
):
    # given: a customer with a running instance, in the browser
    instance = make_instance("web-1")
    watcher = Watcher()
    context = chromium.new_context(viewport=DESKTOP)
    context.add_cookies([session_cookie(alice, live_server, settings)])
    page = watcher.attach(context.new_page())

    # when: a group is made on the Firewall page, reached from the tenant menu
    page.goto(f"{live_server.url}/instances/")
    page.get_by_role("button", name="Tenant").click()
    page.get_by_role("link", name="Firewall").click()
    page.wait_for_url("**/tenant/firewall")
    assert page.locator('section[data-group="default"]').is_visible()
    page.locator("#new-group-form #id_name").fill("web")
    page.locator("#new-group-form #id_description").fill("front ends")
    page.get_by_role("button", name="Create group").click()
    page.wait_for_url("**/tenant/firewall#group-*")
    group = SecurityGroup.objects.get(tenant=tenant_a, name="web")
    card = page.locator('section[data-group="web"]')
    assert "front ends" in card.inner_text() and "No rules" in card.inner_text()

    # when: a rule with an inverted port range is sent
    ids = f"#id_rule-{group.pk.hex[:12]}"
    card.get_by_text("Add a rule").click()
    card.locator(f"{ids}-protocol").select_option("tcp")
    card.locator(f"{ids}-port_min").fill("9000")
    card.locator(f"{ids}-port_max").fill("8000")
    card.locator(f"{ids}-cidr").fill("198.51.100.0/24")
    card.locator(f"{ids}-description").fill("metrics")
    with page.expect_navigation():
        card.get_by_role("button", name="Add rule").click()

    # then: the refusal is next to the field, and everything typed is still there
    card = page.locator('section[data-group="web"]')
    assert "port_max is lower than port_min" in card.locator(f"{ids}-port_max-errors").inner_text()
    assert card.locator(f"{ids}-port_max").get_attribute("aria-invalid") == "true"
    assert card.locator(f"{ids}-port_min").input_value() == "9000"
    assert card.locator(f"{ids}-cidr").input_value() == "198.51.100.0/24"
    assert card.locator(f"{ids}-description").input_value() == "metrics"
    shot(page, "firewall-bad-rule")

    # when: a CIDR that does not parse
    card.locator(f"{ids}-port_max").fill("9100")
    card.locator(f"{ids}-cidr").fill("198.51.100.300/24")
    with page.expect_navigation():
        card.get_by_role("button", name="Add rule").click()
    card = page.locator('section[data-group="web"]')
    assert "Give an IPv4 network" in card.locator(f"{ids}-cidr-errors").inner_text()

    # when: corrected
    card.locator(f"{ids}-cidr").fill("198.51.100.0/24")
    with page.expect_navigation():
        card.get_by_role("button", name="Add rule").click()

    # then: the rule is listed in words
    row = page.locator('section[data-group="web"] tr[data-rule]')
    assert row.count() == 1
    assert row.locator("[data-ports]").inner_text() == "9000–9100"
    assert "198.51.100.0/24" in row.locator("[data-remote]").inner_text()
    shot(page, "firewall")

    # when: the instance joins the group on its page
    page.goto(f"{live_server.url}/instances/{instance.pk}")
    firewall = page.locator("#firewall")
    assert instance.dns_label in firewall.locator("#firewall-dns-name").inner_text()
    firewall.locator("#attach-group").select_option(label="web")
    with page.expect_navigation():
        firewall.get_by_role("button", name="Attach").click()

    # then: it is listed there
    groups = page.locator("#instance-groups")
    assert groups.locator('[data-group="web"]').is_visible()
    assert set(instance.security_groups.values_list("name", flat=True)) == {"default", "web"}

    # when: it leaves the group again
    with page.expect_navigation():
        groups.locator('[data-group="web"]').get_by_role("button", name="Detach").click()

    # then
    assert page.locator('#instance-groups [data-group="web"]').count() == 0
    assert list(instance.security_groups.values_list("name", flat=True)) == ["default"]
    # The refused rules were 400 answers on purpose; nothing else may have gone wrong.
    problems = [p for p in watcher.unexpected().splitlines() if "/rules: Failed to load resource" not in p]
    assert not problems, problems
    context.close()
