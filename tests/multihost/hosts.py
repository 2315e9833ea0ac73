"""Second libvirt hosts on this machine, each in its own namespaces (portal/scripts/second-host.sh).

`bring_up` finds a free address block by itself, so several hosts (or several test runs) can
be up at once. Every process the script starts is reached by its PID; `NamespacedHost` reads
them from the script's answer, which also holds the URI the portal registers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import libvirt
from django.conf import settings as django_settings

from compute import localhost

SCRIPT = Path(django_settings.BASE_DIR) / "portal" / "scripts" / "second-host.sh"
ADDRESS_TAKEN = 3  # the script's exit status when an ADDR_INDEX's /30 is in use here
SCRIPT_TIMEOUT = 180  # generous: a loaded 2-core machine; `up` takes about 2 s when idle
BRIDGE = "brportal"  # the guests' bridge inside each host's network namespace
TOOLS = ("qemu-system-x86_64", "libvirtd", "virtlogd", "virsh", "ip", "nsenter", "unshare", "setsid")


class HostScriptError(RuntimeError):
    pass


def run(*args: str) -> dict[str, str]:
    """Run the script; its KEY=VALUE lines as a dict."""
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    if done.returncode != 0:
        raise HostScriptError(f"second-host.sh {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@dataclass
class NamespacedHost:
    name: str
    uri: str
    address: str
    pool_dir: Path
    state_dir: Path
    anchor_pid: int
    virtlogd_pid: int
    libvirtd_pid: int

    @classmethod
    def from_answer(cls, answer: dict[str, str]) -> NamespacedHost:
        return cls(
            name=answer["NAME"],
            uri=answer["URI"],
            address=answer["ADDRESS"],
            pool_dir=Path(answer["POOL_DIR"]),
            state_dir=Path(answer["STATE_DIR"]),
            anchor_pid=int(answer["ANCHOR_PID"] or 0),
            virtlogd_pid=int(answer["VIRTLOGD_PID"] or 0),
            libvirtd_pid=int(answer["LIBVIRTD_PID"] or 0),
        )

    def _update(self, answer: dict[str, str]) -> None:
        fresh = NamespacedHost.from_answer(answer)
        self.anchor_pid, self.virtlogd_pid, self.libvirtd_pid = fresh.anchor_pid, fresh.virtlogd_pid, fresh.libvirtd_pid

    def restart_libvirtd(self, *, kill: bool = False) -> float:
        """Stop its libvirtd (SIGTERM to its PID, or SIGKILL: a crash) and start it again;
        seconds until it answers."""
        began = time.monotonic()
        self._update(run("restart-libvirtd", self.name, *(["--kill"] if kill else [])))
        return time.monotonic() - began

    def stop_libvirtd(self, *, kill: bool = False) -> None:
        self._update(run("stop-libvirtd", self.name, *(["--kill"] if kill else [])))

    def start_libvirtd(self) -> None:
        self._update(run("start-libvirtd", self.name))

    def qemu_pid(self, domain_name: str) -> int | None:
        """The PID of a guest's QEMU, from the pid file its libvirtd keeps (None when it has none)."""
        path = self.state_dir / "run" / "qemu" / f"{domain_name}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def forwards(self) -> bool:
        """Whether this side forwards what the host sends to other hosts (second-host.sh switches
        it on for the host's veth alone)."""
        veth = "vo" + hashlib.sha1(self.name.encode(), usedforsecurity=False).hexdigest()[:8]
        try:
            return Path(f"/proc/sys/net/ipv4/conf/{veth}/forwarding").read_text().strip() == "1"
        except OSError:
            return False

    def in_namespace(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command in the host's network namespace (to reach its guests, say)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *command], capture_output=True, text=True, timeout=timeout
        )

    def guest_answers(self, address: str) -> bool:
        """Whether a guest's kernel answers at `address`, seen from inside the host: a TCP
        connection to its SSH port is accepted or refused (a reset), where the default security
        group lets it in; a silent guest lets it time out."""
        done = self.in_namespace(sys.executable, "-c", _PROBE, address)
        return done.stdout.strip() == "answered"


_PROBE = """
import socket, sys
probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
probe.settimeout(2)
try:
    probe.connect((sys.argv[1], 22))
    print("answered")
except ConnectionRefusedError:
    print("answered")
except OSError:
    print("silent")
"""


def unavailable() -> str | None:
    """Why no second host can run here (a tool missing, not root, no namespaces), or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (make test installs them as root)"
    if os.geteuid() != 0:
        return "a second libvirtd in its own namespaces needs root"
    probe = f"mh-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    try:
        mounts = subprocess.run(
            ["ip", "netns", "exec", probe, "unshare", "--mount", "--uts", "true"], capture_output=True, text=True
        )
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if mounts.returncode != 0:
        return f"cannot make mount and UTS namespaces: {mounts.stderr.strip()}"
    return None


def veth(near: NamespacedHost, far: NamespacedHost, near_end: str, far_end: str) -> None:
    """A veth pair from one host's network namespace into the other's, both ends up."""
    made = near.in_namespace("ip", "link", "add", near_end, "type", "veth", "peer", "name", far_end, "netns", far.name)
    if made.returncode != 0:
        raise HostScriptError(f"veth {near_end}: {made.stderr.strip()}")
    for ns, end in ((near, near_end), (far, far_end)):
        done = ns.in_namespace("ip", "link", "set", end, "up")
        if done.returncode != 0:
            raise HostScriptError(f"veth {end}: {done.stderr.strip()}")


def remove_libvirt_objects(ns: NamespacedHost, *, network: str, pools: tuple[str, ...]) -> None:
    """Whatever was left on the host: domains, then its network and pool. The daemon may have
    been left stopped, so it is started again first; anything still left dies with the
    namespace."""
    conn = None
    try:
        ns.start_libvirtd()
        conn = libvirt.open(ns.uri)
        for dom in conn.listAllDomains(0):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        localhost.remove(conn, network=network)
        for pool in pools:
            localhost.remove(conn, pool=pool)
    except (HostScriptError, libvirt.libvirtError) as exc:
        print(f"second host {ns.name}: cleaning up through libvirt failed ({exc}); the namespace goes anyway")
    finally:
        if conn is not None:
            conn.close()


def first_index(name: str) -> int:
    """Where to start looking for a free address block: spread by name, so that hosts of
    concurrent runs rarely try the same one first."""
    return int(hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:4], 16) % 254 + 1


def bring_up(name: str) -> NamespacedHost:
    """Start a host called `name` on the first free /30 of the script's range."""
    index = first_index(name)
    for _ in range(254):
        try:
            return NamespacedHost.from_answer(run("up", name, str(index)))
        except HostScriptError as exc:
            if f"exited {ADDRESS_TAKEN}:" not in str(exc):
                raise
        index = index % 254 + 1
    raise HostScriptError("no free address block for a second host")


def tear_down(name: str) -> None:
    run("down", name)
