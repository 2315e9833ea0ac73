"""Helpers for tests that start real processes: Celery workers, the console proxy, the portal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
from django.conf import settings as django_settings

from tests.conftest import RUN_PREFIX

CELERY = Path(django_settings.BASE_DIR) / ".venv" / "bin" / "celery"
READY_WITHIN = 90.0  # a Celery worker's start on a loaded 2-core machine (30 s was seen to be too little)


# Headless Chromium from Debian: no sandbox (root in a container), no background traffic.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def console_proxy(*, database: dict, redis_prefix: str, origin: str):
    """Run `manage.py consoleproxy` on a free port for the test database; yields (port, output)
    where output() is what it has printed so far."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(database),
        "REDIS_PREFIX": redis_prefix,
        "CONSOLE_PROXY_BIND": f"127.0.0.1:{port}",
        "CONSOLE_ALLOWED_ORIGINS": origin,
        "LOG_LEVEL": "DEBUG",  # websockify's steps per connection, for a failing test to show
    }
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full one would stall
    # the proxy mid-session.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "consoleproxy"],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        try:
            wait_for_port(port)
            yield port, output
        finally:
            # The whole group: websockify forks a child per connection, each with a DB connection.
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {within} s")


@dataclass
class Worker:
    queue: str
    process: subprocess.Popen
    log: Path
    ready_after: float = 0.0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ran(self, task: str, task_id: str) -> bool:
        return f"{task}[{task_id}] succeeded" in self.output()


def database_url(db: dict) -> str:
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_starter(settings, tmp_path):
    """Start a worker serving one queue, once it says it is ready. Every worker started is
    stopped (and reaped) at teardown, whatever the test did, and its queue purged."""
    started: list[Worker] = []
    env = {
        **os.environ,
        # settings.DATABASES holds the test database's name while a test runs.
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_PREFIX": RUN_PREFIX,
        "IMAGE_STORE": str(settings.IMAGE_STORE),
        "INSTANCE_STOP_TIMEOUT": str(settings.INSTANCE_STOP_TIMEOUT),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PYTHONUNBUFFERED": "1",
    }

    def start(queue: str, extra_env: dict[str, str] | None = None, *, threads: int = 0) -> Worker:
        """`extra_env`: settings for this worker alone (a fault test's pause, short leases);
        `threads`: run that many tasks at once in a thread pool instead of one at a time."""
        pool = ["-P", "threads", "-c", str(threads)] if threads else ["-P", "solo"]
        log = tmp_path / f"worker-{queue}-{len(started)}.log"
        began = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(CELERY),
                    "-A",
                    "portal",
                    "worker",
                    "-Q",
                    queue,
                    "-n",
                    f"{queue}-{len(started)}@localhost",
                    *pool,
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "info",
                ],
                cwd=django_settings.BASE_DIR,
                env={**env, **(extra_env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(queue, process, log)
        started.append(worker)
        while "ready." not in worker.output():
            assert process.poll() is None, f"worker for {queue} exited:\n{worker.output()}"
            assert time.monotonic() - began < READY_WITHIN, f"worker for {queue} not ready:\n{worker.output()}"
            time.sleep(0.1)
        worker.ready_after = time.monotonic() - began
        return worker

    return start, started


def stop_workers(started) -> None:
    for worker in started:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the task at hand
    for worker in started:
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(timeout=10)
    if started:
        client = redis_client()
        client.delete(*[f"{RUN_PREFIX}:{worker.queue}" for worker in started])
        client.close()
