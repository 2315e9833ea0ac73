"""What a test's processes left behind, read from /proc: only processes the test started are
ever named, each by pid and start time (a pid alone may have been reused)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    session: int
    started: int  # clock ticks after boot: with the pid, names one process for good
    state: str
    name: str


def processes() -> list[Process]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The name is in parentheses and may hold anything, spaces and ')' included.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        found.append(Process(int(entry.name), int(rest[1]), int(rest[3]), int(rest[19]), rest[0], name))
    return found


def descendants(pid: int) -> set[Process]:
    """Every process below `pid` now."""
    table = processes()
    below, frontier = set(), {pid}
    while frontier:
        children = {p for p in table if p.ppid in frontier and p not in below}
        below |= children
        frontier = {p.pid for p in children}
    return below


def alive(recorded: set[Process], sessions: set[int] = frozenset()) -> set[Process]:
    """Those of `recorded` still running, and anything else in `sessions` (orphans that were
    reparented, forked after `recorded` was taken). Zombies do not count: they run nothing."""
    keys = {(p.pid, p.started) for p in recorded}
    return {p for p in processes() if p.state != "Z" and ((p.pid, p.started) in keys or p.session in sessions)}


def kill(survivors: set[Process]) -> None:
    """Tear-down: SIGKILL each of them, by pid, if it is still the same process."""
    for proc in alive(survivors):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
