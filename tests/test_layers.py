"""The drivers contract in pyproject.toml names compute's other modules one by one (import-linter
cannot say "all of compute but drivers"): a new compute module must join the list, or the
drivers could import it unchecked."""

import tomllib
from pathlib import Path

from django.conf import settings


def test_it_forbids_the_drivers_every_other_compute_module():
    root = Path(settings.BASE_DIR)
    contracts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    drivers = next(c for c in contracts if c.get("source_modules") == ["compute.drivers"])
    modules = {f"compute.{path.stem}" for path in (root / "compute").glob("*.py") if path.stem != "__init__"}
    assert modules - set(drivers["forbidden_modules"]) == set()
