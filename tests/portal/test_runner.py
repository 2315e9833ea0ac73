"""portal/runner.py with real processes: any number of stop signals, to the supervisor or to its
whole process group, stop every child and grandchild within a bounded time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.portal import proctree

ROOT = Path(__file__).resolve().parents[2]
GRACE = 3.0
REAP = 5.0  # runner.REAP_SECONDS

# Children as awkward as the real ones: one ignores every stop signal, one leaves a grandchild
# that ignores SIGTERM (as websockify's per-connection children do), one takes a second to stop.
CHILDREN = {
    "stubborn": """
        import signal, time
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        ready()
        time.sleep(600)
    """,
    "forker": """
        import os, signal, time
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            ready("grandchild")
            time.sleep(600)
            os._exit(0)
        ready()
        time.sleep(600)
    """,
    "slow": """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), sys.exit(0)))
        ready()
        time.sleep(600)
    """,
    "polite": """
        import time
        ready()
        time.sleep(600)
    """,
}
READY = """
import sys
from pathlib import Path
def ready(name=None):
    Path(sys.argv[1], name or sys.argv[2]).touch()
"""
DRIVER = """
import sys
from portal.runner import Proc, supervise
children = {children!r}
procs = [Proc(name, [sys.executable, "-c", code, {ready_dir!r}, name]) for name, code in children.items()]
sys.exit(supervise(procs, {{}}, grace={grace}))
"""


def start_supervisor(tmp_path: Path, children: dict[str, str], output=subprocess.PIPE) -> subprocess.Popen:
    codes = {name: READY + textwrap.dedent(code) for name, code in children.items()}
    driver = DRIVER.format(children=codes, ready_dir=str(tmp_path), grace=GRACE)
    return subprocess.Popen(
        [sys.executable, "-c", driver],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: the test signals that group, never its own
    )


def wait_ready(tmp_path: Path, names: list[str], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not all((tmp_path / name).exists() for name in names):
        assert time.monotonic() < deadline, f"not ready: {[n for n in names if not (tmp_path / n).exists()]}"
        time.sleep(0.05)


@pytest.fixture
def recorded():
    """The processes a test started; whatever of them is left at the end is killed, by pid."""
    started: set[proctree.Process] = set()
    yield started
    proctree.kill(started)


@pytest.mark.parametrize(
    "target, signals",
    [
        ("supervisor", [signal.SIGTERM]),
        ("supervisor", [signal.SIGTERM, signal.SIGTERM, signal.SIGTERM, signal.SIGTERM]),
        ("group", [signal.SIGTERM, signal.SIGTERM, signal.SIGTERM]),
        ("group", [signal.SIGINT, signal.SIGINT, signal.SIGHUP, signal.SIGTERM]),
        ("supervisor", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM]),
    ],
    ids=["term-once", "term-4x", "group-term-3x", "group-mixed", "mixed"],
)
def test_it_stops_every_child_whatever_signals_come(tmp_path, recorded, target, signals):
    supervisor = start_supervisor(tmp_path, CHILDREN)
    recorded.add(next(p for p in proctree.processes() if p.pid == supervisor.pid))
    wait_ready(tmp_path, [*CHILDREN, "grandchild"])
    tree = proctree.descendants(supervisor.pid)
    recorded.update(tree)
    sessions = {p.pid for p in tree if p.ppid == supervisor.pid}
    assert len(sessions) == len(CHILDREN) and len(tree) == len(CHILDREN) + 1

    # when: the signals, spread over the grace period (the later ones land mid-clean-up)
    began = time.monotonic()
    for signum in signals:
        if target == "group":
            os.killpg(supervisor.pid, signum)
        else:
            supervisor.send_signal(signum)
        time.sleep(GRACE / (len(signals) + 1))
    output, _ = supervisor.communicate(timeout=GRACE + REAP + 10)
    took = time.monotonic() - began

    # then: it waited out the stubborn child's grace, killed it, and left nothing
    assert GRACE - 0.5 < took < GRACE + REAP, (took, output)
    assert supervisor.returncode == 0, output
    assert "stubborn did not stop within 3 s: killing" in output
    assert output.rstrip().endswith("All portal processes stopped."), output
    assert proctree.alive(tree, sessions) == set()


def test_it_stops_every_child_when_its_output_is_gone(tmp_path, recorded):
    # given: nobody reads its output any more (the terminal closed, the pipe's reader died)
    read, write = os.pipe()
    supervisor = start_supervisor(tmp_path, CHILDREN, output=write)
    os.close(write)
    recorded.add(next(p for p in proctree.processes() if p.pid == supervisor.pid))
    wait_ready(tmp_path, [*CHILDREN, "grandchild"])
    tree = proctree.descendants(supervisor.pid)
    recorded.update(tree)
    sessions = {p.pid for p in tree if p.ppid == supervisor.pid}
    os.close(read)

    os.killpg(supervisor.pid, signal.SIGHUP)
    time.sleep(0.5)
    os.killpg(supervisor.pid, signal.SIGTERM)
    supervisor.wait(timeout=GRACE + REAP + 10)

    assert proctree.alive(tree, sessions) == set()


def test_it_stops_the_rest_when_one_child_exits(tmp_path, recorded):
    # The quitter waits for the polite one to be up: quitting at once, it could have the polite
    # one stopped before it ever said it was ready (seen under a loaded run).
    quitter = """
        import time
        from pathlib import Path
        deadline = time.monotonic() + 30
        while not Path(sys.argv[1], "polite").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ready()
        raise SystemExit(3)
    """
    children = {"polite": CHILDREN["polite"], "quitter": quitter}
    supervisor = start_supervisor(tmp_path, children)
    recorded.add(next(p for p in proctree.processes() if p.pid == supervisor.pid))
    wait_ready(tmp_path, ["polite"])
    tree = proctree.descendants(supervisor.pid)
    recorded.update(tree)

    output, _ = supervisor.communicate(timeout=GRACE + REAP + 10)

    assert supervisor.returncode == 3
    assert "quitter exited with 3; stopping the rest." in output
    assert proctree.alive(tree) == set()
