"""A real hypervisor for the end-to-end suite: libvirtd + QEMU on this machine.

The host gets a dir pool under /var/lib/libvirt/images and an isolated network (no
forwarding), both named for this run and removed afterwards. Domains are type qemu (software
emulation) unless ALLOW_KVM says otherwise, and bandwidth shaping is on only where the kernel
has the qdisc libvirt needs.
"""

from __future__ import annotations

import fcntl
import json
import math
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from django.conf import settings as django_settings

from compute import firewall, localhost
from compute.hosts import host_register
from compute.models import Image
from tests.conftest import RUN_ID

URI = "qemu:///system"
BUILD_SCRIPT = Path(django_settings.BASE_DIR) / "portal" / "scripts" / "build-tiny-image.sh"
TINY_IMAGE = Path(django_settings.BASE_DIR) / "var" / "cache" / "tiny-image" / "tiny.qcow2"
DEBIAN_BUILD_SCRIPT = Path(django_settings.BASE_DIR) / "portal" / "scripts" / "build-debian-image.sh"
DEBIAN_IMAGE = Path(django_settings.BASE_DIR) / "var" / "cache" / "debian-image" / "debian-12.qcow2"
# How long a Debian guest may take to boot to a working SSH login under TCG on a 2-core machine:
# 56 s at load 1-2, 235 s at load 7, and in one full clean-clone run (two Debian guests at once
# beside the rest of the suite) cloud-init had only made the host keys 348 s after boot.
DEBIAN_BOOT_WITHIN = 720.0
# One lock for the whole machine, not per checkout: every test run on it shares qemu:///system.
NETWORKS_LOCK = Path("/run/lock/cloudportal-test-networks.lock")


@contextmanager
def networks_lock():
    """Held while a test run picks a free subnet on qemu:///system and defines its network.

    compute.localhost.free_subnet reads the networks defined, then the network is defined:
    two test processes (xdist workers, or two people's runs) in between both pick the same
    /24, and the second network cannot start. Under this lock the second one sees the first."""
    NETWORKS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with NETWORKS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def hypervisor():
    """A connection to the local libvirtd, or a loud skip saying why there is none."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("END-TO-END SKIPPED: qemu-system-x86_64 is not installed (make test installs it as root)")
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"END-TO-END SKIPPED: libvirtd cannot be reached at {URI}: {exc}")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def tiny_image_file(hypervisor) -> Path:
    """The project's tiny bootable image, built once and cached between runs."""
    subprocess.run(["bash", str(BUILD_SCRIPT), str(TINY_IMAGE)], check=True, capture_output=True, timeout=600)
    return TINY_IMAGE


@pytest.fixture
def real_host(hypervisor, transactional_db):
    name = f"e2e-{RUN_ID}"
    pool_dir = Path("/var/lib/libvirt/images") / f"portal-{name}"
    host = None
    try:
        with networks_lock():
            args = localhost.prepare(URI, pool=name, pool_dir=pool_dir, network=name, bridge=f"vbe2e{RUN_ID[:6]}")
        host = host_register(
            name=name, shaping=localhost.kernel_can_shape(), allow_kvm=django_settings.ALLOW_KVM, **args
        )
        yield host
    finally:
        # Whatever a failed test left: the run's domains, then its network and pool.
        for dom in hypervisor.listAllDomains(0):
            if dom.name().startswith("inst-") and _on_network(dom, name):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        if host is not None:
            firewall.remove_host_filters(host)
        localhost.remove(hypervisor, pool=name, network=name)
        shutil.rmtree(pool_dir, ignore_errors=True)


def _on_network(dom: libvirt.virDomain, network: str) -> bool:
    try:
        return f"<source network='{network}'" in dom.XMLDesc(0)
    except libvirt.libvirtError:
        # Another process's guest (another xdist worker, another run) that went away since
        # the listing: not this run's, and nothing to remove.
        return False


@pytest.fixture
def tiny_image(tiny_image_file, settings) -> Image:
    (settings.IMAGE_STORE / "tiny.qcow2").symlink_to(tiny_image_file)
    return Image.objects.create(
        name="Tiny Linux",
        os_family="linux",
        os_version="busybox",
        size_bytes=tiny_image_file.stat().st_size,
        source_path="tiny.qcow2",
        min_disk_gb=1,
        min_memory_mb=128,
    )


@pytest.fixture(scope="session")
def debian_image_file(hypervisor) -> Path:
    """A Debian 12 cloud-style image built from Debian packages, built once and cached between
    runs (about 2 minutes cold: mmdebstrap downloads and installs some 250 packages)."""
    built = subprocess.run(
        ["bash", str(DEBIAN_BUILD_SCRIPT), str(DEBIAN_IMAGE)], capture_output=True, text=True, timeout=1200
    )
    if built.returncode != 0:
        pytest.fail(f"build-debian-image.sh failed ({built.returncode}):\n{built.stderr[-3000:]}")
    return DEBIAN_IMAGE


@pytest.fixture
def debian_image(debian_image_file, settings) -> Image:
    (settings.IMAGE_STORE / "debian-12.qcow2").symlink_to(debian_image_file)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(debian_image_file)], check=True, capture_output=True, timeout=60
    )
    virtual_size = json.loads(info.stdout)["virtual-size"]
    return Image.objects.create(
        name="Debian 12",
        os_family="debian",
        os_version="12",
        size_bytes=debian_image_file.stat().st_size,
        source_path="debian-12.qcow2",
        min_disk_gb=math.ceil(virtual_size / 2**30),
        min_memory_mb=256,
    )
