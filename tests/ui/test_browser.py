"""The portal in headless Chromium: a stranger signs up and gets a running instance; every page
renders on a desktop and a phone without a Content-Security-Policy violation or a script error.

The host is libvirt's test driver with a real Celery worker: create -> RUNNING with its IP is
real; the console cannot connect there (no VNC), so its page shows why. A real console session
is covered by tests/e2e.
"""

from __future__ import annotations

import re
import socket
import time

import pytest
from django.core import mail
from django.test import Client

from compute import operations, services
from compute.models import Instance
from tests.conftest import actor
from tests.ui.conftest import ARTIFACTS, DESKTOP, PHONE

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "plum-Orchard-42-rain"
SHOTS = ARTIFACTS / "ui"


class Watcher:
    """Collects what pages report: console errors (CSP violations among them) and exceptions."""

    # The console page of an instance without VNC answers 409 on purpose.
    EXPECTED = ("/console: Failed to load resource: the server responded with a status of 409",)

    def __init__(self):
        self.problems: list[str] = []

    def attach(self, page):
        page.on("console", lambda msg: msg.type == "error" and self.problems.append(f"{page.url}: {msg.text}"))
        page.on("pageerror", lambda exc: self.problems.append(f"{page.url}: {exc}"))
        return page

    def unexpected(self) -> str:
        return "\n".join(p for p in self.problems if not any(e in p for e in self.EXPECTED))


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def session_cookie(user, live_server, settings) -> dict:
    client = Client()
    client.force_login(user)
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
        "url": live_server.url,
    }


@pytest.fixture
def http_cookies(settings):
    # The live server speaks plain HTTP; secure cookies would never come back.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


@pytest.mark.worker
def test_it_takes_a_stranger_from_signup_to_a_running_instance(
    chromium, live_server, http_cookies, settings, host, image, flavor, start_worker, operator
):
    start_worker(host.queue)
    watcher = Watcher()
    page = watcher.attach(chromium.new_context(viewport=DESKTOP).new_page())
    ops_context = chromium.new_context(viewport=DESKTOP)
    ops_context.add_cookies([session_cookie(operator, live_server, settings)])
    ops = watcher.attach(ops_context.new_page())

    # an operator watches the host: nothing used yet
    ops.goto(f"{live_server.url}/ops/")
    vcpu = ops.locator(f'[data-host="{host.name}"] [data-capacity="vcpu"]')
    assert vcpu.inner_text().startswith("0 of ")

    # sign up; the e-mail carries the verification link
    page.goto(f"{live_server.url}/")
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Email").fill("nina@example.com")
    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD)
    shot(page, "signup-desktop")
    page.get_by_role("button", name="Sign Up").click()
    page.wait_for_url("**/accounts/confirm-email/")
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+)", mail.outbox[-1].body).group(1)

    # confirming the address logs this browser in
    page.goto(f"{live_server.url}{link}")
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url("**/instances/")
    assert "No instances yet" in page.inner_text("#instances")

    # create: a name, the image card, the flavor card
    page.get_by_role("link", name="Create instance").first.click()
    page.get_by_label("Name").fill("web-1")
    page.get_by_text("Tiny Linux").click()
    page.get_by_text(flavor.name).click()
    shot(page, "create-desktop")
    page.get_by_role("button", name="Create instance").click()

    # the instance page follows the build step by step until it runs, with its address
    page.wait_for_url("**/instances/*-*")
    instance = Instance.objects.get(name="web-1")
    assert page.inner_text("#instance-ip") == instance.ip_address
    page.wait_for_selector("#instance-live[data-state=running]", timeout=60_000)
    assert page.inner_text("#instance-state") == "Running"
    assert "Create" in page.inner_text("#action-log")
    shot(page, "instance-desktop")

    # the dashboard lists it running, with its address
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Instances").click()
    row = page.locator(f'tr[data-instance="{instance.pk}"]')
    assert row.get_attribute("data-state") == "running"
    assert instance.ip_address in row.inner_text()
    shot(page, "dashboard-desktop")

    # the console: the simulated host has no VNC server, and the page says so
    page.goto(f"{live_server.url}/instances/{instance.pk}")
    page.get_by_role("link", name="Console").click()
    page.wait_for_url(f"**/instances/{instance.pk}/console")
    assert page.locator("#console-unavailable").is_visible() or page.locator("#console-screen").count() == 1
    shot(page, "console-desktop")

    # and the operator's page shows the host's capacity taken, without a reload (htmx polling)
    ops.wait_for_function(
        "selector => !document.querySelector(selector).textContent.trim().startsWith('0 of')",
        arg=f'[data-host="{host.name}"] [data-capacity="vcpu"]',
        timeout=15_000,
    )
    assert vcpu.inner_text().startswith(f"{flavor.vcpus} of ")
    shot(ops, "ops-desktop")

    assert watcher.unexpected() == ""


def test_it_moves_the_size_sliders_and_updates_the_summary(
    chromium, live_server, http_cookies, settings, alice, tenant_a, host, image, flavor
):
    watcher = Watcher()
    context = chromium.new_context(viewport=PHONE)
    context.add_cookies([session_cookie(alice, live_server, settings)])
    page = watcher.attach(context.new_page())
    page.goto(f"{live_server.url}/instances/new")

    page.get_by_text("Custom size").click()
    assert page.locator('[data-size-panel="custom"]').is_visible()
    assert not page.locator('[data-size-panel="flavor"]').is_visible()
    page.get_by_label("vCPUs").fill("3")
    page.get_by_label("Memory").fill("2048")

    # the output next to the slider and the htmx summary both follow
    assert page.inner_text('[data-output-for="id_vcpus"]') == "3"
    page.wait_for_function(
        "() => document.querySelector('[data-summary=memory_mb]').textContent.trim() === '2 GiB'"
        " && document.querySelector('[data-summary=vcpus]').textContent.trim() === '3'"
    )
    shot(page, "create-custom-phone")
    assert watcher.unexpected() == ""


PAGES = [
    ("home", None, "/"),
    ("catalogue", None, "/flavors/"),
    ("login", None, "/accounts/login/"),
    ("signup", None, "/accounts/signup/"),
    ("password-reset", None, "/accounts/password/reset/"),
    ("dashboard", "alice", "/instances/"),
    ("create", "alice", "/instances/new"),
    ("instance", "alice", "/instances/{pk}"),
    ("resize", "alice", "/instances/{pk}/resize"),
    ("rebuild", "alice", "/instances/{pk}/rebuild"),
    ("snapshot", "alice", "/instances/{pk}/snapshot"),
    ("delete", "alice", "/instances/{pk}/delete"),
    ("console-unavailable", "alice", "/instances/{pk}/console"),
    ("members", "alice", "/tenant/members"),
    ("quota", "alice", "/tenant/quota"),
    ("tokens", "alice", "/tenant/tokens"),
    ("ssh-keys", "alice", "/tenant/ssh-keys"),
    ("firewall", "alice", "/tenant/firewall"),
    ("billing", "alice", "/tenant/billing"),
    ("two-factor", "alice", "/accounts/2fa/"),
    ("totp-activate", "alice", "/accounts/2fa/totp/activate/"),
    ("email", "alice", "/accounts/email/"),
    ("password-change", "alice", "/accounts/password/change/"),
    ("ops", "operator", "/ops/"),
    ("admin-tenants", "operator", "/admin/tenants/tenant/"),
    ("admin-instance", "operator", "/admin/compute/instance/{pk}/change/"),
    ("api-docs", None, "/api/docs/"),
]
# Third-party pages: their layout is theirs (the policy still applies to the admin).
NOT_OURS = ("admin-", "api-docs")


def test_it_renders_every_page_on_a_desktop_and_a_phone_within_the_csp(
    chromium, live_server, http_cookies, settings, alice, tenant_a, operator, make_instance
):
    # given: instances in a few states, so the pages show what they look like with each
    instance = make_instance("web-1")
    stopped = make_instance("db-1")
    services.instance_stop(actor=actor(alice, tenant_a), instance=stopped)
    operations.stop(stopped.pk)
    make_instance("worker-1", built=False)
    operator.is_superuser = True  # the admin's pages too
    operator.save(update_fields=["is_superuser"])
    users = {"alice": alice, "operator": operator}
    watcher = Watcher()
    for width_name, viewport in [("desktop", DESKTOP), ("phone", PHONE)]:
        contexts = {}
        for name, user_name, path in PAGES:
            if user_name not in contexts:
                contexts[user_name] = chromium.new_context(viewport=viewport)
                if user_name:
                    contexts[user_name].add_cookies([session_cookie(users[user_name], live_server, settings)])
            page = watcher.attach(contexts[user_name].new_page())
            response = page.goto(f"{live_server.url}{path.format(pk=instance.pk)}")
            if name == "instance":
                page.wait_for_load_state("networkidle")  # the charts fetch their data after load
            assert response.status in (200, 409), (path, response.status)
            assert response.headers["content-security-policy"].startswith("default-src 'self'")
            if not name.startswith(NOT_OURS):
                # nothing wider than the screen: the layout holds on a phone
                overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, (name, width_name, overflow)
            if name != "api-docs":
                shot(page, f"{name}-{width_name}")
            page.close()
        for context in contexts.values():
            context.close()
    assert watcher.unexpected() == ""


def test_it_sets_up_two_factor_and_then_asks_for_a_code_at_login(chromium, live_server, http_cookies, alice, tenant_a):
    from allauth.account.models import EmailAddress
    from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value, yield_hotp_counters_from_time

    EmailAddress.objects.create(user=alice, email=alice.email, verified=True, primary=True)

    def current_code(secret: str) -> str:
        # A code about to expire may reach the server in the next 30 s period: wait for a fresh one.
        if time.time() % 30 > 25:
            time.sleep(30 - time.time() % 30 + 0.5)
        counters = list(yield_hotp_counters_from_time())
        return format_hotp_value(hotp_value(secret, counters[len(counters) // 2]))

    watcher = Watcher()
    page = watcher.attach(chromium.new_context(viewport=DESKTOP).new_page())

    # a password login, then the authenticator app: QR code, secret, a code from the app
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(alice.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url("**/instances/")
    page.goto(f"{live_server.url}/accounts/2fa/")
    shot(page, "two-factor-index-desktop")
    page.get_by_role("link", name="Activate").click()
    # allauth asks for the password again before any change to the second factor
    page.wait_for_url("**/accounts/reauthenticate/*")
    shot(page, "reauthenticate-desktop")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url("**/accounts/2fa/totp/activate/")
    assert page.locator("img.totp-qr").is_visible()
    secret = page.input_value("#authenticator_secret")
    shot(page, "totp-activate-desktop")
    page.get_by_label("Authenticator code").fill("000000" if current_code(secret) != "000000" else "111111")
    page.get_by_role("button", name="Activate").click()
    assert "Incorrect code" in page.inner_text("form.allauth-form")  # the error sits with the field
    page.get_by_label("Authenticator code").fill(current_code(secret))
    page.get_by_role("button", name="Activate").click()
    page.wait_for_url("**/accounts/2fa/recovery-codes/")
    codes = page.input_value("#recovery_codes").split()
    assert len(codes) >= 5
    shot(page, "recovery-codes-desktop")

    # signing in again now needs a second factor; a recovery code will do
    page.get_by_role("button", name=alice.email).click()
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(alice.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url("**/accounts/2fa/authenticate/")
    shot(page, "two-factor-authenticate-desktop")
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url("**/instances/")
    assert watcher.unexpected() == ""


def test_the_console_page_gives_up_on_a_proxy_that_never_answers(
    chromium, live_server, http_cookies, settings, alice, make_instance
):
    # given: a running instance with a display, and a "proxy" that accepts and then says nothing
    instance = make_instance()
    Instance.objects.filter(pk=instance.pk).update(vnc_port=5999)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.CONSOLE_PROXY_URL = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        settings.CONSOLE_CONNECT_SECONDS = 2
        context = chromium.new_context(viewport=DESKTOP)
        context.add_cookies([session_cookie(alice, live_server, settings)])
        page = context.new_page()

        # when
        page.goto(f"{live_server.url}/instances/{instance.pk}/console")

        # then: the page stops waiting, says it could not connect, and offers Reconnect
        page.wait_for_selector("body[data-console-state=disconnected]", timeout=15_000)
        assert "Could not connect" in page.inner_text("#console-status")
        assert page.locator("#console-reconnect").is_visible()
        shot(page, "console-no-connect")
        # and it was this silent peer the page had been waiting on
        silent.settimeout(5)
        peer, _ = silent.accept()
        with peer:
            peer.settimeout(5)
            assert peer.recv(64).startswith(b"GET /?token=")
        context.close()
