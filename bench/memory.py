"""Peak memory (RSS) of the web and worker processes while a benchmark drives them (item 6).

Read from /proc/<pid>/status, no extra package: VmRSS is the resident set now and VmHWM its
high-water mark since the process started, so sampling VmHWM a few times a second catches
the peak even between samples. Each gunicorn worker and each Celery worker process counts
on its own (the figure is the largest single process; the note adds them up); gunicorn's
master, which only forks and supervises, is left out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from bench import processes
from bench.report import Figure

INTERVAL = 0.25


def status_kib(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


@dataclass
class RolePeaks:
    first_rss_kib: dict[int, int] = field(default_factory=dict)  # pid -> RSS when first seen
    hwm_kib: dict[int, int] = field(default_factory=dict)  # pid -> highest VmHWM seen
    peak_total_kib: int = 0  # the most all processes of the role held at one sample


class RssSampler:
    """A thread sampling every running bench process (bench.processes) until stopped."""

    def __init__(self) -> None:
        self.roles: dict[str, RolePeaks] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> None:
        totals: dict[str, int] = {}
        for service in processes.running():
            peaks = self.roles.setdefault(service.role, RolePeaks())
            # The gunicorn master only forks and supervises; the workers serve requests.
            pids = service.pids()[1:] if service.role == "web" else service.pids()
            for pid in pids:
                values = status_kib(pid)
                if not values:
                    continue
                if service.ready:
                    peaks.first_rss_kib.setdefault(pid, values.get("VmRSS", 0))
                peaks.hwm_kib[pid] = max(peaks.hwm_kib.get(pid, 0), values.get("VmHWM", 0))
                totals[service.role] = totals.get(service.role, 0) + values.get("VmRSS", 0)
        for role, total in totals.items():
            self.roles[role].peak_total_kib = max(self.roles[role].peak_total_kib, total)

    def mark_baseline(self) -> None:
        """Take each running process's RSS now as its baseline (call it after a warm-up)."""
        for service in processes.running():
            peaks = self.roles.setdefault(service.role, RolePeaks())
            for pid in service.pids()[1:] if service.role == "web" else service.pids():
                if rss := status_kib(pid).get("VmRSS"):
                    peaks.first_rss_kib[pid] = rss

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.sample()

    def figures(self, during: str) -> list[Figure]:
        """Per role: the peak of the largest process, against its RSS right after start."""
        labels = {
            "web": "web: peak RSS of one gunicorn worker",
            "worker": "worker: peak RSS of one Celery worker process",
        }
        result = []
        for role, peaks in sorted(self.roles.items()):
            if not peaks.hwm_kib:
                continue
            pid = max(peaks.hwm_kib, key=peaks.hwm_kib.get)
            result.append(
                Figure(
                    "memory",
                    f"{labels.get(role, role)} (during {during})",
                    peaks.hwm_kib[pid] / 1024,
                    "MiB",
                    baseline=peaks.first_rss_kib.get(pid, 0) / 1024 or None,
                    baseline_name="same process after warm-up",
                    note=f"{len(peaks.hwm_kib)} {role} process(es) sampled; "
                    f"all of them together peaked at {peaks.peak_total_kib / 1024:.0f} MiB",
                    detail={"per_process_peak_mib": {str(p): round(k / 1024, 1) for p, k in peaks.hwm_kib.items()}},
                )
            )
        return result
