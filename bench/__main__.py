"""`python -m bench [AREA ...] [--quick]`: run the benchmarks, print the table, write the JSON.

Areas run in the order given (all of them by default); one that fails is reported as an
error row and the others still run. The exit status is 1 when an area failed, 0 otherwise:
a missed target is a finding, not a crash.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from pathlib import Path

from bench.report import RESULTS, Figure, failed, notes, number, table

# area name -> module; "memory" is not an area of its own: its figures are sampled while the
# control-plane and api areas run, so asking for it runs those two.
AREAS = {
    "scheduler": "bench.scheduler",
    "api": "bench.api_list",
    "control-plane": "bench.control_plane",
    "real-vm": "bench.real_vm",
    "debian-ssh": "bench.debian_ssh",
    "billing": "bench.billing",
    "fleet": "bench.fleet",
    "bulk-create": "bench.bulk_create",
    "live-migration": "bench.live_migration",
}
# "fleet" (issue 17: 10,000 hosts, 1,000,000 instances) takes a quarter of an hour or more:
# it runs only when named, never as part of "all" (`make bench`).
ALIASES = {"memory": ["control-plane", "api"], "all": [area for area in AREAS if area != "fleet"]}


def _areas(names: list[str]) -> list[str]:
    chosen: list[str] = []
    for raw in names or ["all"]:
        name = raw.replace("_", "-")
        if name == "api-list":
            name = "api"
        for area in ALIASES.get(name, [name]):
            if area not in AREAS:
                raise SystemExit(f"Unknown area {raw!r}; choose from {', '.join([*AREAS, *ALIASES])}.")
            if area not in chosen:
                chosen.append(area)
    return chosen


def _terminate(signum, frame):
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the environment's cleanup runs.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("areas", nargs="*", help=f"any of: {', '.join([*AREAS, *ALIASES])} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of a couple of minutes")
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "latest.json", help="where to write the JSON (default: %(default)s)"
    )
    parser.add_argument(
        "--child-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the web and worker processes, to try a setting out",
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.child_env if "=" in item)
    areas = _areas(args.areas)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)

    try:
        return _run(args, areas, overrides)
    except KeyboardInterrupt:
        print("\ninterrupted: every process, database, key and libvirt object of this run was removed")
        return 130


def _run(args: argparse.Namespace, areas: list[str], overrides: dict[str, str]) -> int:
    from bench.environment import BenchEnvironment

    began = time.monotonic()
    figures: list[Figure] = []
    errors = 0
    with BenchEnvironment(overrides) as env:
        from bench.report import machine_info, write_json

        machine = machine_info()
        print(
            f"bench run {env.run_id}: database {env.db_name}, Redis prefix {env.redis_prefix}:, "
            f"{machine['nproc']} CPUs, load {machine['loadavg_at_start'][0]:.2f}"
            + (f", child env {overrides}" if overrides else ""),
            flush=True,
        )
        for area in areas:
            print(f"== {area}{' (quick)' if args.quick else ''}", flush=True)
            area_began = time.monotonic()
            try:
                module = importlib.import_module(AREAS[area])
                got = module.run(env, quick=args.quick)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                got = [failed(area, exc)]
                errors += 1
                traceback.print_exc()
            finally:
                from bench import processes

                processes.stop_all()  # whatever the area left running
            for fig in got:
                shown = number(fig.value, fig.unit) if fig.value is not None else fig.note
                print(f"   {fig.name}: {shown} [{fig.verdict}]")
            print(f"   ({time.monotonic() - area_began:.0f} s)", flush=True)
            figures += got
        elapsed = time.monotonic() - began
        write_json(args.output, machine=machine, argv=sys.argv, figures=figures, elapsed_s=elapsed)
    print()
    print(table(figures))
    if extra := notes(figures):
        print("\nNotes:\n" + extra)
    print(f"\n{len(figures)} figures in {time.monotonic() - began:.0f} s; written to {args.output}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
