"""The console proxy process: tokens work once, refusals, Origin, and sessions cut on stop.

The VNC end is a loopback TCP peer that speaks the first line of RFB; the end-to-end suite
points the same proxy at QEMU's real VNC server.
"""

import socket
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from websockify.websocket import WebSocket

from compute import console, operations, services
from compute.models import Instance
from compute.sizing import Size
from tenants.models import Membership, Tenant
from tests.conftest import actor
from tests.processes import console_proxy

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "http://portal.test"


@pytest.fixture
def vnc_peer():
    """A loopback TCP server that greets like a VNC server and then echoes.

    Its accept blocks (no polling timeout, which accepted sockets could inherit); closing the
    listening socket at teardown ends it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # the listening socket was closed: the test is over
            conn.settimeout(None)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn):
        with conn:
            try:
                conn.sendall(b"RFB 003.008\n")
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass  # the proxy cut the session

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(timeout=5)


@pytest.fixture
def proxy(transactional_db, settings):
    with console_proxy(database=connection.settings_dict, redis_prefix=settings.REDIS_PREFIX, origin=ORIGIN) as (
        port,
        output,
    ):
        yield port
        print(output())  # shown by pytest when the test fails


@pytest.fixture
def running(alice, tenant_a, host, image, flavor, vnc_peer):
    request = services.CreateRequest(name="vm", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=None)
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    operations.provision(instance.pk)
    # libvirt's test driver gives no VNC port: point the instance at the loopback peer.
    Instance.objects.filter(pk=instance.pk).update(vnc_port=vnc_peer)
    instance.refresh_from_db()
    return instance


class ConsoleClient(WebSocket):
    """websockify's client drops the query string from the request; the token travels in it."""

    def __init__(self, query: str):
        super().__init__()
        self.query = query

    def send_request(self, type, path):
        super().send_request(type, f"{path}?{self.query}")


def open_console(port: int, token: str, origin: str = ORIGIN) -> WebSocket:
    ws = ConsoleClient(f"token={token}")
    ws.connect(f"ws://127.0.0.1:{port}/", origin=origin, protocols=["binary"])
    ws.socket.settimeout(30)  # generous: the whole suite, three guests booting, loads both cores
    return ws


def refused(port: int, token: str, origin: str = ORIGIN) -> bool:
    try:
        ws = open_console(port, token, origin)
    except Exception:
        return True
    try:
        return ws.recvmsg() in (None, b"")
    except Exception:
        return True


def test_it_opens_a_console_once_per_token(proxy, running, alice, tenant_a):
    token = console.mint_token(actor=actor(alice, tenant_a), instance=running)

    ws = open_console(proxy, token)

    assert ws.recvmsg() == b"RFB 003.008\n"
    ws.sendmsg(b"ping")
    assert ws.recvmsg() == b"ping"
    ws.close()
    assert refused(proxy, token), "a used token must not open a second session"


def test_it_refuses_made_up_expired_and_foreign_origin_tokens(proxy, running, alice, tenant_a, settings):
    assert refused(proxy, "made-up-token")
    good = console.mint_token(actor=actor(alice, tenant_a), instance=running)
    assert refused(proxy, good, origin="http://evil.test")
    settings.CONSOLE_TOKEN_TTL = 1
    expired = console.mint_token(actor=actor(alice, tenant_a), instance=running)
    time.sleep(1.5)
    assert refused(proxy, expired)


def test_it_keeps_only_a_hash_of_the_token_in_redis(running, alice, tenant_a, settings):
    token = console.mint_token(actor=actor(alice, tenant_a), instance=running)
    keys = [k.decode() for k in console._redis().keys(f"{settings.REDIS_PREFIX}:console:*")]
    assert keys and all(token not in key for key in keys)
    assert all(token.encode() not in console._redis().get(key) for key in keys)


def test_it_refuses_viewers_and_stopped_instances(running, vera, alice, tenant_a):
    with pytest.raises(Exception, match="member role"):
        console.mint_token(actor=actor(vera, tenant_a), instance=running)
    Instance.objects.filter(pk=running.pk).update(state="stopped", vnc_port=None)
    running.refresh_from_db()
    with pytest.raises(Exception, match="while the instance runs"):
        console.mint_token(actor=actor(alice, tenant_a), instance=running)


@pytest.mark.parametrize("cut", ["stop", "suspend", "remove_member"])
def test_it_closes_an_open_console_when_access_ends(proxy, running, alice, bob, tenant_a, cut):
    token = console.mint_token(actor=actor(bob, tenant_a), instance=running)
    ws = open_console(proxy, token)
    assert ws.recvmsg() == b"RFB 003.008\n"

    if cut == "stop":
        Instance.objects.filter(pk=running.pk).update(state="stopped", vnc_port=None)
    elif cut == "suspend":
        Tenant.objects.filter(pk=tenant_a.pk).update(status=Tenant.Status.SUSPENDED)
    else:
        Membership.objects.filter(user=bob, tenant=tenant_a).delete()

    deadline = time.monotonic() + 10
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            closed = ws.recvmsg() in (None, b"")
        except Exception:
            closed = True
    assert closed, "the proxy must cut the session within seconds"
