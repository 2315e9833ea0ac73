"""`make run`: the portal's processes started together, and stopped together by one Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen | None = None


def supervise(procs: list[Proc], env: dict[str, str]) -> int:
    """Start every process; when one exits or Ctrl-C arrives, stop them all and return."""
    # SIGTERM and SIGHUP (a closed terminal, `timeout`, a service manager) stop the run like
    # Ctrl-C; otherwise the children, each in its own session, would outlive us.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    for proc in procs:
        print(f"  starting {proc.name}: {' '.join(proc.argv)}", flush=True)
        # Own process group each, so Ctrl-C reaches them only through us, in order.
        proc.popen = subprocess.Popen(proc.argv, env=env, start_new_session=True)
    exit_code = 0
    try:
        while True:
            for proc in procs:
                code = proc.popen.poll()
                if code is not None:
                    print(f"\n{proc.name} exited with {code}; stopping the rest.", flush=True)
                    exit_code = code or 1
                    raise KeyboardInterrupt
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_all(procs)
    return exit_code


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_all(procs: list[Proc], grace: float = 10.0) -> None:
    for proc in procs:
        if proc.popen and proc.popen.poll() is None:
            os.killpg(proc.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        if not proc.popen:
            continue
        try:
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait()
    print("All portal processes stopped.", flush=True)


def python_bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)
