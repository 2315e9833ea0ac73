"""In Chromium: pages that show an instance, a quota or a host stay live without a reload, and
their polls are conditional (an unchanged fragment is a 304 without a body)."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client
from playwright.sync_api import expect

from compute import history, operations, services, upkeep
from compute.drivers.libvirt import connect
from compute.models import Flavor, Host, Image, Instance
from compute.sizing import Size
from tests.conftest import actor
from tests.ui.conftest import DESKTOP

pytestmark = pytest.mark.django_db(transaction=True)
# The instance page polls every 2 s once settled; a change shows within that, plus slack.
WITHIN_MS = 6000


def logged_in_page(chromium, live_server, settings, user):
    settings.SESSION_COOKIE_SECURE = False  # the live server speaks plain http
    settings.CSRF_COOKIE_SECURE = False
    client = Client()
    client.force_login(user)
    context = chromium.new_context(viewport=DESKTOP)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    statuses: list[int] = []
    page.on("response", lambda r: "/live" in r.url and statuses.append(r.status))
    return page, errors, statuses


def test_it_keeps_the_instance_page_and_the_dashboard_live(
    chromium, live_server, settings, alice, tenant_a, host, make_instance
):
    # given: a running instance, its page open
    instance = make_instance("web-1")
    page, errors, statuses = logged_in_page(chromium, live_server, settings, alice)
    # The fragments' version changes once a minute (the cost so far follows time): a poll
    # across a minute boundary is rightly a 200, so start well clear of one.
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)
    page.goto(f"{live_server.url}/instances/{instance.pk}")
    state = page.locator("#instance-state")
    assert state.inner_text() == "Running"
    assert page.locator("#instance-power").inner_text() == "On"

    # when: nothing changes, the polls are answered 304
    page.wait_for_timeout(4500)
    assert statuses and set(statuses) == {304}, statuses

    # when: the guest powers itself off and the reconciler notices
    connect(host.uri).lookupByUUIDString(str(instance.pk)).shutdown()
    upkeep.sync_power_states(host.pk)

    # then: the open page says Stopped within the poll interval, no reload
    expect(state).to_have_text("Stopped", timeout=WITHIN_MS)
    assert page.locator("#instance-power").inner_text() == "Off"

    # when: it is resized to another flavor (the worker's step run here)
    bigger = Flavor.objects.create(
        name="s1.bigger", vcpus=2, memory_mb=1024, disk_gb=20, bandwidth_mbit=100, traffic_gb=1000
    )
    services.instance_resize(
        actor=actor(alice, tenant_a),
        instance=Instance.objects.get(pk=instance.pk),
        size=Size.of_flavor(bigger),
        flavor_id=str(bigger.pk),
    )
    operations.resize(instance.pk)

    # then: Details shows the new flavor and size
    expect(page.locator("[data-detail=flavor]")).to_have_text("s1.bigger", timeout=WITHIN_MS)
    assert "2 vCPU · 1 GiB · 20 GiB" in page.locator("[data-detail=size]").inner_text()

    # when: its host stops answering
    history.set_host_status([host.pk], Host.Status.DOWN)

    # then: the page says what is shown may be stale
    page.locator("#host-down").wait_for(timeout=WITHIN_MS)
    assert "Host unreachable — state may be stale" in page.locator("#host-down").inner_text()

    # and the dashboard says it too, and its quota cards follow the list
    page.goto(f"{live_server.url}/instances/")
    assert page.locator("[data-host-down]").count() == 1
    assert page.locator("[data-quota=instances]").inner_text() == "1 of 10"
    assert page.locator("[data-quota=memory_mb]").inner_text() == "1 of 40 GiB"
    history.set_host_status([host.pk], Host.Status.UP)
    make_instance("web-2")
    expect(page.locator("tr[data-instance]")).to_have_count(2, timeout=WITHIN_MS)
    assert page.locator("[data-quota=instances]").inner_text() == "2 of 10"
    assert page.locator("[data-quota=memory_mb]").inner_text() == "1.5 of 40 GiB"
    assert page.locator("[data-host-down]").count() == 0
    assert not errors, errors


def test_it_keeps_the_quota_page_and_the_operators_hosts_live(
    chromium, live_server, settings, alice, operator, host, make_instance
):
    page, errors, _statuses = logged_in_page(chromium, live_server, settings, alice)
    page.goto(f"{live_server.url}/tenant/quota")
    assert page.locator("[data-quota=instances]").inner_text() == "0 of 10"

    make_instance("web-1")

    expect(page.locator("[data-quota=instances]")).to_have_text("1 of 10", timeout=8000)
    assert page.locator("[data-quota=memory_mb]").inner_text() == "0.5 of 40 GiB"

    ops, ops_errors, _ = logged_in_page(chromium, live_server, settings, operator)
    ops.goto(f"{live_server.url}/ops/")
    badge = ops.locator(f"[data-host='{host.name}'] [data-host-status]")
    assert badge.inner_text() == "Up"
    history.set_host_status([host.pk], Host.Status.DOWN)
    expect(badge).to_have_text("Down", timeout=8000)
    assert "EUR invoiced" in ops.locator("#revenue").inner_text()
    assert not errors and not ops_errors, errors + ops_errors


def test_it_greys_out_flavors_too_small_for_the_image_and_warns_without_a_key(
    chromium, live_server, settings, alice, tenant_a, host, image, flavor
):
    # given: a second image that needs more disk than the flavor has
    big = Image.objects.create(
        name="Big Linux",
        os_family="linux",
        os_version="2",
        size_bytes=512,
        min_disk_gb=50,
        source_path=image.source_path,
        visibility=Image.Visibility.PUBLIC,
        state=Image.State.ACTIVE,
    )
    page, errors, _statuses = logged_in_page(chromium, live_server, settings, alice)
    page.goto(f"{live_server.url}/instances/new")
    flavor_input = page.locator(f"input[name=flavor][value='{flavor.pk}']")
    tiny_id = page.locator(f"input[name=image][value='{image.pk}']").get_attribute("id")
    page.locator(f"label[for='{tiny_id}']").click()
    expect(flavor_input).to_be_enabled()
    expect(page.locator("#no-key-warning")).to_be_visible()

    # when: the big image is chosen
    big_id = page.locator(f"input[name=image][value='{big.pk}']").get_attribute("id")
    page.locator(f"label[for='{big_id}']").click()

    # then: the flavor is greyed out and cannot be picked
    expect(flavor_input).to_be_disabled()
    expect(page.locator(f"label[for='{flavor_input.get_attribute('id')}']")).to_have_class(re.compile("too-small"))
    assert not errors, errors
