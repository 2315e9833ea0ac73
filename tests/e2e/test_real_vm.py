"""A real guest, end to end: REST API -> real Celery worker -> libvirtd/QEMU -> DHCP lease ->
noVNC in headless Chromium -> stop/start keeps the disk -> delete leaves nothing behind.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import warnings
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import libvirt
import pytest
from django.conf import settings as django_settings
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from billing import metering
from billing.models import MeterSample
from compute import firewall
from compute.drivers.libvirt import disk_volume, seed_volume
from compute.models import Flavor, Instance, IpAllocation
from tests.conftest import client_for, token_for
from tests.processes import CHROMIUM_FLAGS, console_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(django_settings.BASE_DIR) / "tests" / "artifacts"
SENT_PACKETS, PAYLOAD = 200, 1000  # UDP datagrams sent to the guest when metering is checked


def wait_for(what: str, check, within: float, every: float = 0.2):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within} s")


def state_of(api, instance_id: str) -> str:
    return api.get(f"/api/v1/instances/{instance_id}").json()["state"]


def stopped_within(hypervisor, api, instance_id: str, within: float) -> None:
    """The stop settles (the guest may ignore ACPI: 30 s, then a power-off); if it does not,
    say where it was: the action log's steps and the domain's state on the host."""
    try:
        wait_for("STOPPED", lambda: state_of(api, instance_id) == "stopped", within=within)
    except AssertionError:
        steps = api.get(f"/api/v1/instances/{instance_id}").json()["actions"]
        domain = hypervisor.lookupByUUIDString(instance_id).state()
        raise AssertionError(f"not stopped within {within} s; domain state {domain}; actions {steps}") from None


def lease_ip(network: libvirt.virNetwork, mac: str) -> str | None:
    for lease in network.DHCPLeases():
        if lease["mac"].lower() == mac.lower():
            return lease["ipaddr"]
    return None


def boot_count(hypervisor: libvirt.virConnect, uuid: str) -> int:
    """Ask the guest's serial shell, through libvirt's console stream, for its boot counter.

    The stream is a blocking one read by a thread: a non-blocking stream would need libvirt's
    event loop running in this process.
    """
    dom = hypervisor.lookupByUUIDString(uuid)
    stream = hypervisor.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = stream.recv(4096)
            except libvirt.libvirtError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            stream.send(b"echo TINY-BOOT=$(cat /run/tiny-boot)x\r")
            for _ in range(15):
                if match := re.search(rb"TINY-BOOT=(\d+)x", bytes(seen)):
                    return int(match.group(1))
                time.sleep(0.2)
        raise AssertionError(f"no boot counter on the serial console; saw: {bytes(seen[-500:])!r}")
    finally:
        stream.abort()
        reader.join(timeout=5)


@pytest.fixture
def proxy(live_server, settings):
    with console_proxy(
        database=connection.settings_dict, redis_prefix=settings.REDIS_PREFIX, origin=live_server.url
    ) as (port, output):
        settings.CONSOLE_PROXY_URL = f"ws://127.0.0.1:{port}"
        yield port, output


@pytest.fixture
def browser_page(live_server, monkeypatch, alice, settings):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls that follow are
    # still plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.SESSION_COOKIE_SECURE = False
    client = Client()
    client.force_login(alice)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1024, "height": 768})
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}])
        yield context.new_page()
        browser.close()
        # Playwright runs the test in a greenlet with its own context, and Django's connections
        # are context-local: the ones opened in there are closed in there, or they linger.
        connections.close_all()


def watch_browser(page) -> list[str]:
    """What the page logs and what its WebSockets do, as (seconds, event) lines."""
    began = time.monotonic()
    seen: list[str] = []

    def note(text: str) -> None:
        seen.append(f"{time.monotonic() - began:.1f}s {text}")

    def on_websocket(ws) -> None:
        note(f"websocket {ws.url[:40]}")
        frames = {"in": 0, "out": 0}

        def count(way):
            def counted(_payload):
                frames[way] += 1
                if frames[way] <= 3:
                    note(f"frame {way} #{frames[way]}")

            return counted

        ws.on("framereceived", count("in"))
        ws.on("framesent", count("out"))
        ws.on("socketerror", lambda error: note(f"websocket error {error}"))
        ws.on("close", lambda _ws: note(f"websocket closed after {frames}"))

    page.on("console", lambda message: note(f"console {message.type}: {message.text[:200]}"))
    page.on("pageerror", lambda error: note(f"page error {error}"))
    page.on("requestfailed", lambda request: note(f"request failed {request.url} {request.failure}"))
    page.on("websocket", on_websocket)
    return seen


def console_settles(page) -> list[str]:
    """The console page's state and words once it stops connecting (it gives up after 30 s),
    or ["connecting", ""] if it never does (its script did not run)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector("body:not([data-console-state=connecting])", timeout=60_000)
    except PlaywrightTimeout:
        return ["connecting", ""]
    # a failed attempt's words come from a fetch; give it a moment to land
    page.wait_for_function("document.getElementById('console-status').textContent !== 'Disconnected'")
    return page.evaluate("[document.body.dataset.consoleState, document.getElementById('console-status').textContent]")


def knock(ip: str) -> bool:
    """Send the guest one datagram (the host then asks for its MAC); True once the host's
    neighbour table holds a complete entry for it (flags 0x2 in /proc/net/arp)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"k", (ip, 9))
    rows = Path("/proc/net/arp").read_text().splitlines()[1:]
    return any(row.split()[0] == ip and row.split()[2] == "0x2" for row in rows)


def test_it_boots_a_real_guest_serves_its_console_and_cleans_up(
    hypervisor,
    real_host,
    tiny_image,
    start_worker,
    proxy,
    browser_page,
    live_server,
    alice,
    tenant_a,
    charlie,
    tenant_b,
):
    flavor = Flavor.objects.create(
        name="e2e.tiny",
        vcpus=1,
        memory_mb=256,
        disk_gb=1,
        bandwidth_mbit=100,
        traffic_gb=10,
        sla_percent=Decimal("99.9"),
    )
    # The guest's own shutdown gets 30 s (the suite's 5 s was what this worker had: a setting
    # changed in the test never reached it, and a loaded machine's guest takes longer).
    start_worker(real_host.queue, {"INSTANCE_STOP_TIMEOUT": "30"})
    api = client_for(token=token_for(alice, tenant_a))
    network = hypervisor.networkLookupByName(real_host.network)

    # create through the REST API; a real worker builds it on libvirtd
    began = time.monotonic()
    response = api.post(
        "/api/v1/instances", {"name": "e2e <vm>", "image": str(tiny_image.pk), "flavor": str(flavor.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    created = response.json()
    instance_id, ip = created["id"], created["ip_address"]
    wait_for("RUNNING", lambda: state_of(api, instance_id) == "running", within=120)
    running_after = time.monotonic() - began
    leased = wait_for("DHCP lease", lambda: lease_ip(network, created["mac_address"]), within=120)
    lease_after = time.monotonic() - began
    print(f"\nE2E create -> RUNNING {running_after:.1f} s, create -> DHCP lease {lease_after:.1f} s")
    assert leased == ip

    # the console, in a real browser through the real proxy to QEMU's VNC server
    assert client_for(charlie).post(f"/api/v1/instances/{instance_id}/console").status_code == 404
    assert api.post(f"/api/v1/instances/{instance_id}/console").status_code == 201
    page = browser_page
    seen = watch_browser(page)
    page.goto(f"{live_server.url}/instances/{instance_id}/console")
    shown = console_settles(page)
    if shown[0] == "connecting":
        # The page's script never ran (it gives up by itself after 30 s): seen in CI beside a
        # full suite. A user reloads; what the browser saw goes to the warnings summary.
        warnings.warn(f"the console page's script did not run; browser: {seen}", stacklevel=1)
        seen.clear()
        page.reload()
        shown = console_settles(page)
        assert shown[0] != "connecting", f"the console page's script did not run twice; browser: {seen}"
    if shown[0] != "connected":
        # A user clicks Reconnect. Beside a full suite a first session was seen to stay
        # "connecting" for a minute (in CI, and once in a loaded local run; never under CPU load
        # alone), which is why the page gives up after CONSOLE_CONNECT_SECONDS. What the browser
        # and the proxy saw goes to the warnings summary, for whoever finds the cause.
        first = f"{shown}; browser: {seen}; proxy:\n{proxy[1]()[-6000:]}"
        warnings.warn(f"the first console session did not open: {first}", stacklevel=1)
        seen.clear()
        page.click("#console-reconnect")
        shown = console_settles(page)
        assert shown[0] == "connected", f"{shown}; browser: {seen}; proxy:\n{proxy[1]()[-6000:]}"
    time.sleep(2)  # let a few frames of the guest's screen arrive
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"))

    # stopping the instance closes the open console
    assert api.post(f"/api/v1/instances/{instance_id}/stop").status_code == 202
    page.wait_for_selector("body[data-console-state=disconnected]", timeout=45_000)
    stopped_within(hypervisor, api, instance_id, within=120)

    # start again: the disk kept its contents, so the guest counts its second boot
    assert api.post(f"/api/v1/instances/{instance_id}/start").status_code == 202
    wait_for("RUNNING again", lambda: state_of(api, instance_id) == "running", within=60)
    assert boot_count(hypervisor, instance_id) == 2

    # metering reads QEMU's own interface counters: bytes sent to the guest are its rx. Its
    # firewall lets them in only once the tenant opens the port (the default group takes SSH
    # and ICMP only), as a customer would; the rule is on the host when its filter holds it.
    group = api.get("/api/v1/security-groups").json()["results"][0]
    rule = {"security_group_id": group["id"], "direction": "ingress", "protocol": "udp", "port_min": 9}
    assert api.post("/api/v1/security-group-rules", rule, format="json").status_code == 201
    group_filter = firewall.group_filter_name(real_host, group["id"])
    wait_for(
        "the rule on the host",
        lambda: "dstportstart='9'" in hypervisor.nwfilterLookupByName(group_filter).XMLDesc(0),
        within=60,
    )
    # The host must know the guest's MAC first: until it does, the kernel keeps only about 100
    # datagrams for an address and drops the rest before they reach the guest's interface.
    wait_for("the guest answering ARP", lambda: knock(ip), within=90)
    metered_at = timezone.now().replace(microsecond=0)
    metering.meter(real_host, now=metered_at)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(SENT_PACKETS):
            udp.sendto(b"m" * PAYLOAD, (ip, 9))  # discard port: nothing listens, the bytes still arrive
    metering.meter(real_host, now=metered_at + timedelta(seconds=1))
    last = MeterSample.objects.filter(instance_id=instance_id).latest("taken_at")
    print(f"E2E metering: rx +{last.rx_delta} B, tx +{last.tx_delta} B, cpu +{last.cpu_ns_delta} ns")
    assert last.taken_at == metered_at + timedelta(seconds=1)
    assert last.rx_delta >= SENT_PACKETS * PAYLOAD
    assert last.cpu_ns_delta > 0

    # delete leaves no domain, volume, DHCP entry or IP allocation
    mac = created["mac_address"]
    assert api.delete(f"/api/v1/instances/{instance_id}").status_code == 202
    wait_for("DELETED", lambda: state_of(api, instance_id) == "deleted", within=60)
    with pytest.raises(libvirt.libvirtError):
        hypervisor.lookupByUUIDString(instance_id)
    pool = hypervisor.storagePoolLookupByName(real_host.storage_pool)
    pool.refresh(0)
    assert disk_volume(instance_id) not in pool.listVolumes()
    assert seed_volume(instance_id) not in pool.listVolumes()
    assert mac not in network.XMLDesc(0)
    assert not IpAllocation.objects.filter(instance_id=instance_id).exists()
    assert Instance.objects.get(pk=instance_id).deleted_at is not None
