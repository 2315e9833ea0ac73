"""Figures, the printed table, and bench/results/latest.json with the machine they came from."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured figure, its same-run baseline, and the target it is held to.

    `passed` is None for figures without a target (informative). `status` overrides the
    verdict for areas that were skipped or failed; `note` says why, or what it includes.
    """

    area: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    passed: bool | None = None
    status: str = ""
    note: str = ""
    detail: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        if self.status:
            return self.status
        if self.passed is None:
            return "info"
        return "pass" if self.passed else "MISS"

    def as_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "verdict": self.verdict}


def skipped(area: str, reason: str) -> Figure:
    return Figure(area, "(area)", None, "", status="skipped", note=reason)


def failed(area: str, error: BaseException) -> Figure:
    return Figure(area, "(area)", None, "", status="error", note=f"{type(error).__name__}: {error}")


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks, as numpy's default does."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    """A Markdown table: readable in a terminal and pasted as is into docs/performance.md."""
    header = ["area", "figure", "value", "baseline", "ratio", "target", "result"]
    rows = []
    for fig in figures:
        baseline = number(fig.baseline, fig.unit) if fig.baseline is not None else ""
        if baseline and fig.baseline_name:
            baseline = f"{baseline} ({fig.baseline_name})"
        ratio = f"{fig.ratio:.2f}" if fig.ratio is not None else ""
        name = fig.name if fig.name != "(area)" else fig.note
        value = number(fig.value, fig.unit) if fig.value is not None else ""
        rows.append([fig.area, name, value, baseline, ratio, fig.target, fig.verdict])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(lines)


def notes(figures: list[Figure]) -> str:
    seen: list[str] = []
    for fig in figures:
        if fig.note and fig.name != "(area)" and f"{fig.area}: {fig.note}" not in seen:
            seen.append(f"{fig.area}: {fig.note}")
    return "\n".join(f"- {line}" for line in seen)


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> dict:
    """What the figures depend on. Needs Django set up (for the PostgreSQL version)."""
    import libvirt
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    base = Path(__file__).resolve().parent.parent
    commit = _run(["git", "-C", str(base), "rev-parse", "HEAD"])
    dirty = bool(_run(["git", "-C", str(base), "status", "--porcelain", "--untracked-files=no"]))
    major, rest = divmod(libvirt.getVersion(), 1000000)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": postgres,
        "libvirt": f"{major}.{rest // 1000}.{rest % 1000}",
        "git_commit": commit + ("+uncommitted" if dirty else ""),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()),
    }


def write_json(path: Path, *, machine: dict, argv: list[str], figures: list[Figure], elapsed_s: float) -> None:
    """Written to a .tmp file first, so a crash never leaves half a JSON document behind."""
    body = {
        "machine": {**machine, "loadavg_at_end": list(os.getloadavg())},
        "command": argv,
        "elapsed_s": round(elapsed_s, 1),
        "figures": [fig.as_json() for fig in figures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=1, default=str) + "\n")
    tmp.replace(path)
