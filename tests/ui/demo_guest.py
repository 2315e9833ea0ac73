"""A real guest for the console screenshot: the project's tiny Linux on the local libvirtd (QEMU),
on a pool and an isolated network of its own, all removed on the way out, and the console proxy
in front of its VNC server. Used by `tests/ui/screenshots.py --real-console`.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
from django.conf import settings
from django.db import connection

from compute import firewall, localhost
from compute.hosts import host_register
from compute.models import Host
from portal.management.commands import seed_demo

URI = "qemu:///system"
BUILD_SCRIPT = Path(settings.BASE_DIR) / "portal" / "scripts" / "build-tiny-image.sh"
TINY_IMAGE = Path(settings.BASE_DIR) / "var" / "cache" / "tiny-image" / "tiny.qcow2"


@contextmanager
def real_host() -> Iterator[Host]:
    """A host on qemu:///system with its own pool and network; on exit its guests, network and
    pool are gone."""
    name = f"shots-{uuid.uuid4().hex[:6]}"
    pool_dir = Path("/var/lib/libvirt/images") / f"portal-{name}"
    conn = libvirt.open(URI)
    try:
        args = localhost.prepare(URI, pool=name, pool_dir=pool_dir, network=name, bridge=f"vb{name}")
        yield host_register(name=name, shaping=False, allow_kvm=settings.ALLOW_KVM, **args)
    finally:
        for dom in conn.listAllDomains(0):
            if f"<source network='{name}'" in dom.XMLDesc(0):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        forget = Host.objects.filter(name=name).first()
        if forget is not None:
            firewall.remove_host_filters(forget)
        localhost.remove(conn, pool=name, network=name)
        conn.close()
        shutil.rmtree(pool_dir, ignore_errors=True)


def link_tiny_image(image_store: Path) -> None:
    """The tiny bootable Linux, built once and cached between runs (as the e2e suite does), where
    seed_demo looks for it: seed_demo then lists it without building it again."""
    subprocess.run(["bash", str(BUILD_SCRIPT), str(TINY_IMAGE)], check=True, capture_output=True, timeout=600)
    (image_store / seed_demo.TINY_IMAGE).symlink_to(TINY_IMAGE)


@contextmanager
def console_proxy_for(origin: str) -> Iterator[None]:
    """The console proxy on a free port, for this database and the portal at `origin`."""
    from tests.processes import console_proxy

    with console_proxy(database=connection.settings_dict, redis_prefix=settings.REDIS_PREFIX, origin=origin) as (
        port,
        _output,
    ):
        settings.CONSOLE_PROXY_URL = f"ws://127.0.0.1:{port}"
        yield
