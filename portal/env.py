"""Typed readers for settings that come from the environment.

Every setting has a default that runs with no environment at all, so `make run` works on a
fresh checkout; production overrides them with real values.
"""

import os
import secrets
from pathlib import Path


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw is None or raw.strip() == "" else int(raw)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def secret_key(path: Path) -> str:
    """SECRET_KEY from the environment, else from an ignored local file made on first use."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(50)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with 0600 so a key on a shared machine is not world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def running_in_a_vm() -> bool:
    """True when this machine is itself a guest (the CPU's `hypervisor` flag). Nested KVM is
    unreliable there (seen hanging at boot, or aborting in QEMU), so KVM is off by default."""
    try:
        return " hypervisor" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
