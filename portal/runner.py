"""`make run`: the portal's processes started together, and stopped together by one Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

# Ctrl-C, and what a closed terminal, `timeout`, `kill` or a service manager send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 10.0  # SIGTERM to SIGKILL
REAP_SECONDS = 5.0  # after SIGKILL, for a process stuck in the kernel


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen | None = None


def supervise(procs: list[Proc], env: dict[str, str], grace: float = GRACE_SECONDS) -> int:
    """Start every process; when one exits or a stop signal arrives, stop them all and return.

    Any number of SIGINT, SIGTERM or SIGHUP, sent to this process alone or to its whole process
    group, ends the same way: every child's process group gets SIGTERM, whatever is left of it
    `grace` seconds later gets SIGKILL, and the children are reaped before this returns. The
    handlers only take note, so a second signal can never cut that clean-up short.
    """
    received: list[int] = []

    def note(signum, frame):
        # No printing here: a handler that writes while the interrupted code was writing
        # raises "reentrant call", which is how a second Ctrl-C used to abort the clean-up.
        received.append(signum)

    previous = {signum: signal.signal(signum, note) for signum in STOP_SIGNALS}
    exit_code = 0
    try:
        for proc in procs:
            if received:
                break
            _say(f"  starting {proc.name}: {' '.join(proc.argv)}")
            # Own session each: a signal to our process group (Ctrl-C in a terminal) reaches
            # them only through us, and each child's group holds everything it forks.
            proc.popen = subprocess.Popen(proc.argv, env=env, start_new_session=True)
        while not received:
            ended = [(proc, code) for proc in procs if (code := _exit_status(proc)) is not None]
            if ended:
                proc, code = ended[0]
                _say(f"\n{proc.name} exited with {code}; stopping the rest.")
                exit_code = code or 1
                break
            time.sleep(0.2)
    finally:
        if received:
            _say(f"\n{signal.Signals(received[0]).name}: stopping every portal process (up to {grace:.0f} s).")
        _stop_all(procs, grace, received)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return exit_code


def _stop_all(procs: list[Proc], grace: float, received: list[int]) -> None:
    started = [proc for proc in procs if proc.popen is not None]
    _signal_groups(started, signal.SIGTERM)
    deadline = time.monotonic() + grace
    noted = len(received)
    while time.monotonic() < deadline and any(_exit_status(proc) is None for proc in started):
        if len(received) > noted:
            noted = len(received)
            _say(f"  still stopping ({deadline - time.monotonic():.0f} s until SIGKILL)")
        time.sleep(0.1)
    stragglers = [proc.name for proc in started if _exit_status(proc) is None]
    if stragglers:
        _say(f"  {', '.join(stragglers)} did not stop within {grace:.0f} s: killing")
    # Every group, also of the children that exited: what they forked may still run (websockify's
    # per-connection children ignore SIGTERM). The leaders are not reaped yet (_exit_status
    # leaves them as zombies), so each group id still names our group and no newcomer's.
    _signal_groups(started, signal.SIGKILL)
    for proc in started:
        try:
            proc.popen.wait(timeout=REAP_SECONDS)
        except subprocess.TimeoutExpired:
            _say(f"  {proc.name} (pid {proc.popen.pid}) is still there after SIGKILL")
    _say("All portal processes stopped.")


def _exit_status(proc: Proc) -> int | None:
    """The child's exit code (negative: the signal that ended it), or None while it runs.
    Unlike Popen.poll() it does not reap the child, so its pid and group id stay ours."""
    if proc.popen is None:
        return None
    if proc.popen.returncode is not None:
        return proc.popen.returncode
    try:
        info = os.waitid(os.P_PID, proc.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.popen.poll()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _signal_groups(procs: list[Proc], signum: int) -> None:
    for proc in procs:
        if proc.popen.returncode is None:  # reaped ones' group ids may belong to others now
            try:
                os.killpg(proc.popen.pid, signum)
            except ProcessLookupError:
                pass


def _say(text: str) -> None:
    """Print, but never fail: the terminal may be gone (SIGHUP) or the reader of a pipe dead,
    and neither may stop the clean-up."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        pass


def fresh_metrics_dir(path: str) -> str:
    """PROMETHEUS_MULTIPROC_DIR for a stack that starts: emptied, since files of processes of an
    earlier run would be added to this run's figures (and live gauges of the dead never drop)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    return path


def python_bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)
