"""The web server (gunicorn, as in production) and Celery workers a benchmark runs against.

Every process is started in its own session and recorded here the moment it exists, so
`stop_all()` (run by the environment's cleanup, whatever happened) can stop and reap each
process group: SIGTERM first, a warm shutdown, then SIGKILL after a grace period.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.environment import BASE_DIR, BenchEnvironment

BIN = Path(sys.executable).parent
READY_WITHIN = 60.0
STOP_GRACE = 20.0

_running: list[Service] = []
_lock = threading.Lock()


@dataclass
class Service:
    name: str
    role: str  # "web" or "worker": what memory figures group by
    process: subprocess.Popen
    log: Path
    port: int | None = None
    ready: bool = False  # set once it serves; memory figures take their baseline from then

    def pids(self) -> list[int]:
        """The process and its children (gunicorn's workers)."""
        return [self.process.pid, *children_of(self.process.pid)]

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def machine_cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CLOCK_TICKS, sum(fields) / CLOCK_TICKS


def running() -> list[Service]:
    with _lock:
        return [service for service in _running if service.process.poll() is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(env: BenchEnvironment, name: str, role: str, argv: list[str], extra_env: dict[str, str]) -> Service:
    log = env.tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=env.child_env(**extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(name, role, process, log)
    with _lock:
        _running.append(service)
    return service


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_web(
    env: BenchEnvironment,
    *,
    workers: int = 2,
    threads: int = 4,
    app: str = "portal.wsgi",
    extra_args: tuple[str, ...] = (),
    extra_env: dict | None = None,
) -> Service:
    """gunicorn on 127.0.0.1, as `make run` starts it; ready once /healthz answers 200.

    `app`, `extra_args` and `extra_env` exist for investigations (a patched WSGI module, a
    setting tried out); the benchmarks themselves run the product as configured.
    """
    port = free_port()
    argv = [
        str(BIN / "gunicorn"),
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--access-logfile",
        str(env.tmp / f"web-{port}-access.log"),
        *extra_args,
    ]
    service = _spawn(env, f"web-{port}", "web", argv, extra_env or {})
    service.port = port
    began = time.monotonic()
    while not _healthy(port):
        if service.process.poll() is not None or time.monotonic() - began > READY_WITHIN:
            raise RuntimeError(f"gunicorn did not come up:\n{service.output()[-3000:]}")
        time.sleep(0.2)
    service.ready = True
    return service


def start_workers(
    env: BenchEnvironment, queue_sets: list[list[str]], *, concurrency: int = 4, extra_env: dict | None = None
) -> list[Service]:
    """One `celery worker -P threads` per queue set, started together; ready once each says so."""
    services = []
    for number, queues in enumerate(queue_sets, start=1):
        name = f"worker{number}-{env.run_id}"
        argv = [
            str(BIN / "celery"),
            "-A",
            "portal",
            "worker",
            "-Q",
            ",".join(queues),
            "-n",
            f"{name}@localhost",
            "-P",
            "threads",
            "-c",
            str(concurrency),
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
        ]
        services.append(_spawn(env, name, "worker", argv, extra_env or {}))
    began = time.monotonic()
    for service in services:
        while "ready." not in service.output():
            if service.process.poll() is not None or time.monotonic() - began > READY_WITHIN:
                raise RuntimeError(f"{service.name} did not come up:\n{service.output()[-3000:]}")
            time.sleep(0.1)
        service.ready = True
    return services


def _group_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def stop(services: list[Service]) -> None:
    """SIGTERM each process group, wait, SIGKILL what is left, and reap every process."""
    members: dict[int, list[int]] = {}
    for service in services:
        members[service.process.pid] = children_of(service.process.pid)
        if service.process.poll() is None:
            try:
                os.killpg(service.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE
    for service in services:
        leader = service.process.pid
        try:
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
            service.process.wait(timeout=10)
        # A child that outlived its parent (gunicorn's workers): only the ones recorded above,
        # and only while they are still in this group, so no other process is ever touched.
        for child in members[leader]:
            if _group_of(child) == leader:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with _lock:
            if service in _running:
                _running.remove(service)


def stop_all() -> None:
    with _lock:
        services = list(_running)
    stop(services)
