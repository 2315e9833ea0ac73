"""`make run`'s command really starts web, worker and beat, and one signal stops them all."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.worker
def test_it_serves_the_portal_and_stops_everything_on_ctrl_c(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "LIBVIRT_DEFAULT_URI": "",  # force the test-driver fallback, whatever runs on this machine
        "REDIS_PREFIX": f"runtest-{uuid.uuid4().hex[:8]}",
        "CELERY_DEFAULT_QUEUE": f"runtest-{uuid.uuid4().hex[:8]}.control",
    }
    env.pop("DATABASE_URL", None)  # the embedded SQLite default, as on a fresh machine
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runportal", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        body = None
        for _ in range(60):  # up to 30 s
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:  # noqa: S310
                    body = response.read()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == b'{"status": "ok"}'
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/flavors", timeout=5) as response:  # noqa: S310
            assert b"s1.small" in response.read()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert "NO LIBVIRTD" in output
    assert "operator@localhost  password: " in output
    assert "All portal processes stopped." in output
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert leftovers == ""
