"""Second libvirt hosts on this machine, each in its own namespaces (portal/scripts/second-host.sh).

`bring_up` finds a free address block by itself, so several hosts (or several test runs) can
be up at once. Every process the script starts is reached by its PID; `NamespacedHost` reads
them from the script's answer, which also holds the URI the portal registers.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings as django_settings

SCRIPT = Path(django_settings.BASE_DIR) / "portal" / "scripts" / "second-host.sh"
ADDRESS_TAKEN = 3  # the script's exit status when an ADDR_INDEX's /30 is in use here
SCRIPT_TIMEOUT = 180  # generous: a loaded 2-core machine; `up` takes about 2 s when idle


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
