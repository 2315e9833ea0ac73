"""Tenant isolation with real packets: three tiny guests on one real host, two of tenant A in A's
default security group and one of tenant B. Shown through the guests' own serial shells:
- B cannot reach A's port 8080, while A's second guest (same group) can;
- a rule for TCP 8080 opens the port within seconds, and removing it closes it again, with no
  reboot;
- a packet from a spoofed source address is dropped;
- no guest reaches the host itself (a listener on the network's gateway address stands in for
  a VNC server there);
- each guest resolves its own and its group peer's DNS names through the network's DNS.
Traffic stays between the test's guests and the host's bridge.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from decimal import Decimal

import libvirt
import pytest

from compute import firewall
from compute.models import Flavor, Instance, SecurityGroup
from tests.conftest import client_for, token_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
PORT = 8080
RULE_WITHIN = 90  # seconds a rule change may take to reach a running guest (4-9 s here, more under load)


def wait_for(what: str, check, within: float, every: float = 0.5):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within} s")


class SerialShell:
    """The guest's serial shell, through libvirt's console stream, kept open for many commands."""

    def __init__(self, conn: libvirt.virConnect, uuid: str, name: str):
        self.name = name
        self.stream = conn.newStream(0)
        conn.lookupByUUIDString(uuid).openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self.seen = bytearray()
        self.count = 0
        self.closing = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.stream.recv(4096)
            except libvirt.libvirtError:
                return
            if not chunk or not isinstance(chunk, bytes) or self.closing:
                return
            self.seen.extend(chunk)

    def run(self, command: str, within: float = 60) -> str:
        """Run `command`; its output. The end marker is built by the shell (`$((…))`), so the
        echo of the typed line never matches it."""
        self.count += 1
        n = self.count
        start = len(self.seen)
        self.stream.send(f"{command}\recho END$((1000+{n}))END\r".encode())
        marker = re.compile(rb"END" + str(1000 + n).encode() + rb"END")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            match = marker.search(bytes(self.seen[start:]))
            if match:
                return bytes(self.seen[start : start + match.start()]).decode(errors="replace")
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: {command!r} did not finish; saw {bytes(self.seen[-600:])!r}")

    def wait_ready(self, ip: str, within: float = 240) -> None:
        """Until the shell answers and the guest holds its address."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if ip in self.run("ip -4 addr show eth0", within=5):
                    return
            except AssertionError:
                pass
            time.sleep(1)
        raise AssertionError(f"{self.name} never had {ip}; saw {bytes(self.seen[-800:])!r}")

    def reaches(self, ip: str, port: int = PORT, source: str | None = None) -> bool:
        """Whether a TCP connection to ip:port gets the listener's greeting."""
        bind = f"-s {source} " if source else ""
        # busybox's timeout too: a connection cut by a filter change mid-way can outlast nc's -w.
        return "HELLO-FROM-" in self.run(f"echo x | timeout 5 nc -w 3 {bind}{ip} {port}", within=30)

    def close(self) -> None:
        """Let the stream end with its guest (deleted after this, here or by the host's
        fixture), whose console closing ends the reader's recv(). No call on the stream from
        here: with the reader blocked in recv(), an abort never returned (25 minutes in one
        clean-clone run), and neither did a send() in another."""
        self.closing = True


def create(api, name: str, image, flavor) -> str:
    response = api.post(
        "/api/v1/instances", {"name": name, "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    )
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def running(api, uuid: str) -> dict:
    def check():
        body = api.get(f"/api/v1/instances/{uuid}").json()
        assert body["state"] != "error", body
        return body if body["state"] == "running" else None

    return wait_for(f"{uuid} running", check, within=240)


class HostListener:
    """A TCP listener on the host's side of the guests' network (its gateway address), greeting
    whoever connects: what a VNC server there would be."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _peer = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn:
                conn.sendall(b"HELLO-FROM-HOST\n")

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_it_isolates_tenants_with_security_groups_and_names_guests(
    hypervisor, real_host, tiny_image, start_worker, alice, tenant_a, charlie, tenant_b
):
    flavor = Flavor.objects.create(
        name="e2e.net", vcpus=1, memory_mb=192, disk_gb=1, bandwidth_mbit=10, traffic_gb=1, sla_percent=Decimal(99)
    )
    start_worker(real_host.queue)
    api_a = client_for(token=token_for(alice, tenant_a))
    api_b = client_for(token=token_for(charlie, tenant_b))
    ids = {
        "a1": create(api_a, "web one", tiny_image, flavor),
        "a2": create(api_a, "db", tiny_image, flavor),
        "b1": create(api_b, "neighbour", tiny_image, flavor),
    }
    bodies = {key: running(api_a if key != "b1" else api_b, uuid) for key, uuid in ids.items()}
    ips = {key: body["ip_address"] for key, body in bodies.items()}
    # the names are made DNS-safe, under each tenant's own label
    assert bodies["a1"]["dns_name"] == f"web-one.{tenant_a.slug}.cloud.internal"
    assert bodies["b1"]["dns_name"] == f"neighbour.{tenant_b.slug}.cloud.internal"
    gateway = str(next(ipaddress.ip_network(real_host.ip_pool.cidr).hosts()))
    shells = {key: SerialShell(hypervisor, uuid, key) for key, uuid in ids.items()}
    listener = HostListener(gateway)
    try:
        for key, shell in shells.items():
            shell.wait_ready(ips[key])
        shells["a1"].run(f"(while true; do echo HELLO-FROM-A1 | nc -l -p {PORT}; done) >/dev/null 2>&1 &")
        time.sleep(1)

        # then: the same group reaches A1's port, the other tenant does not
        assert wait_for("a2 reaches a1 (same group)", lambda: shells["a2"].reaches(ips["a1"]), within=30)
        assert not shells["b1"].reaches(ips["a1"])

        # when: tenant A opens 8080 to everyone in its default group
        group = SecurityGroup.objects.get(tenant=tenant_a, is_default=True)
        rule = {"security_group_id": str(group.pk), "direction": "ingress", "protocol": "tcp"}
        response = api_a.post(
            "/api/v1/security-group-rules", {**rule, "port_min": PORT, "port_max": PORT}, format="json"
        )
        assert response.status_code == 201, response.json()
        opened = time.monotonic()
        wait_for("b1 reaches a1 after the rule", lambda: shells["b1"].reaches(ips["a1"]), within=RULE_WITHIN)
        print(f"\nE2E firewall: rule added -> port open in {time.monotonic() - opened:.1f} s")

        # then: the same packets from a spoofed source address are dropped
        spoofed = str(ipaddress.ip_address(ips["b1"]) + 1)
        shells["b1"].run(f"ip addr add {spoofed}/32 dev eth0")
        assert not shells["b1"].reaches(ips["a1"], source=spoofed)
        shells["b1"].run(f"ip addr del {spoofed}/32 dev eth0")
        assert shells["b1"].reaches(ips["a1"])  # its own address still works

        # when: the rule goes again
        assert api_a.delete(f"/api/v1/security-group-rules/{response.json()['id']}").status_code == 204
        closed = time.monotonic()
        wait_for("b1 shut out again", lambda: not shells["b1"].reaches(ips["a1"]), within=RULE_WITHIN)
        print(f"E2E firewall: rule removed -> port closed in {time.monotonic() - closed:.1f} s")

        # then: no guest reaches the host's own port, which the host itself does
        with socket.create_connection((gateway, listener.port), timeout=5) as own:
            assert own.recv(64).startswith(b"HELLO-FROM-HOST")
        before = listener.accepted
        for key in ("a1", "b1"):
            assert not shells[key].reaches(gateway, listener.port)
        assert listener.accepted == before

        # and: each guest resolves its own and its group peer's name through the network's DNS
        for key, peer in (("a1", "a2"), ("a2", "a1")):
            for whom in (key, peer):
                answer = shells[key].run(f"nslookup {bodies[whom]['dns_name']} {gateway}", within=30)
                assert ips[whom] in answer, answer
    finally:
        listener.close()
        for shell in shells.values():
            shell.close()

    # when: all go, their filters go too
    for key, uuid in ids.items():
        api = api_a if key != "b1" else api_b
        assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    wait_for(
        "deleted",
        lambda: Instance.objects.filter(pk__in=ids.values(), state="deleted").count() == 3,
        within=120,
    )
    names = [firewall.instance_filter_name(i) for i in Instance.objects.filter(pk__in=ids.values())]
    names += [firewall.group_filter_name(real_host, g.pk) for g in SecurityGroup.objects.all()]
    wait_for("filters removed", lambda: not [n for n in names if filter_exists(hypervisor, n)], within=60)


def filter_exists(conn: libvirt.virConnect, name: str) -> bool:
    """Looked up by name: listing the host's filters can deadlock libvirt 9.0 while guests start."""
    try:
        conn.nwfilterLookupByName(name)
    except libvirt.libvirtError:
        return False
    return True
