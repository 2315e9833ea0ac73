from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from decimal import Decimal

import libvirt
from django.conf import settings
from django.core.management.base import BaseCommand

from billing.models import FlavorPrice, SlaTier
from billing.prices import price_list
from compute import localhost
from compute.drivers.base import HostError, TransientHostError
from compute.hosts import host_register
from compute.models import Flavor, Host, Image

FLAVORS = [
    # name, vcpus, memory MiB, disk GiB, bandwidth Mbit/s, traffic GiB, SLA %, hourly, monthly cap
    ("s1.nano", 1, 512, 10, 100, 500, "99.500", "0.0060", "3.99"),
    ("s1.small", 1, 1024, 25, 200, 1000, "99.900", "0.0095", "5.99"),
    ("s1.medium", 2, 2048, 50, 500, 2000, "99.900", "0.0190", "11.99"),
    ("s1.large", 4, 8192, 100, 1000, 4000, "99.950", "0.0520", "32.99"),
    ("c1.xlarge", 8, 16384, 200, 1000, 8000, "99.990", "0.1040", "65.99"),
]
# Credits for each SLA level: missing the promise itself gives 10% back, falling below 99%
# gives 30%, below 95% the whole month's charge.
LOWER_TIERS = [("99", "30"), ("95", "100")]
DEMO_IMAGE = "blank-10g.qcow2"
TINY_IMAGE = "tiny-linux.qcow2"


IFNAMSIZ = 16  # Linux: an interface name has at most 15 characters


def bridge_name(network: str) -> str:
    """The Linux bridge of the libvirt network `network`: a valid interface name (at most 15
    of a-z, 0-9 and '-'), and another one for another network, so two deployments on one machine
    (each with its own LIBVIRT_NETWORK) never share a bridge. A name that is not usable as it
    is gets a hash of the whole name."""
    slug = re.sub(r"[^a-z0-9]+", "-", network.lower()).strip("-")
    name = f"vbr-{slug}"
    if slug == network and len(name) < IFNAMSIZ:
        return name
    digest = hashlib.sha256(network.encode()).hexdigest()[:6]
    return f"vbr-{slug[:4].strip('-') or 'net'}-{digest}"


class Command(BaseCommand):
    help = "Seed the demo catalogue (flavors, an image) and register a host. Safe to run again."

    def handle(self, *args, **options):
        price_list()
        for name, vcpus, memory, disk, bandwidth, traffic, sla, hourly, cap in FLAVORS:
            flavor, _ = Flavor.objects.get_or_create(
                name=name,
                defaults={
                    "vcpus": vcpus,
                    "memory_mb": memory,
                    "disk_gb": disk,
                    "bandwidth_mbit": bandwidth,
                    "traffic_gb": traffic,
                    "sla_percent": Decimal(sla),
                },
            )
            FlavorPrice.objects.get_or_create(
                flavor=flavor, defaults={"hourly": Decimal(hourly), "monthly_cap": Decimal(cap)}
            )
        levels = {Decimal(f[6]) for f in FLAVORS} | {Decimal(settings.CUSTOM_SIZE_SLA_PERCENT)}
        for sla in sorted(levels):
            for below, credit in [(str(sla), "10"), *LOWER_TIERS]:
                if Decimal(below) <= sla:
                    SlaTier.objects.get_or_create(
                        sla_percent=sla, below=Decimal(below), defaults={"credit_percent": Decimal(credit)}
                    )
        self._image()
        if not Host.objects.exists():
            self._host()
        if Host.objects.exclude(domain_type=Host.DomainType.TEST).exists():
            self._tiny_linux()

    def _tiny_linux(self) -> None:
        """The project's tiny bootable Linux (busybox), when this machine can build it."""
        store = settings.IMAGE_STORE
        store.mkdir(parents=True, exist_ok=True)
        path = store / TINY_IMAGE
        script = settings.BASE_DIR / "portal" / "scripts" / "build-tiny-image.sh"
        result = subprocess.run(["bash", str(script), str(path)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            self.stdout.write(self.style.WARNING(f"Could not build the tiny Linux image:\n{result.stderr[-2000:]}"))
            return
        Image.objects.update_or_create(
            name="Tiny Linux (busybox)",
            visibility=Image.Visibility.PUBLIC,
            defaults={
                "os_family": "linux",
                "os_version": "busybox",
                "size_bytes": path.stat().st_size,
                "source_path": TINY_IMAGE,
                "min_disk_gb": 1,
                "min_memory_mb": 128,
            },
        )

    def _image(self) -> None:
        store = settings.IMAGE_STORE
        store.mkdir(parents=True, exist_ok=True)
        path = store / DEMO_IMAGE
        if not path.exists():
            qemu_img = shutil.which("qemu-img")
            if qemu_img:
                subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(path), "10G"], check=True)
            else:
                path.write_bytes(b"")
        Image.objects.get_or_create(
            name="Blank disk (no OS)",
            defaults={
                "os_family": "none",
                "os_version": "",
                "size_bytes": path.stat().st_size,
                "source_path": DEMO_IMAGE,
                "min_disk_gb": 10,
                "min_memory_mb": 64,
            },
        )

    def _host(self) -> None:
        uri = settings.LIBVIRT_DEFAULT_URI
        if uri:
            try:
                args = localhost.prepare(
                    uri,
                    pool=settings.LIBVIRT_POOL,
                    pool_dir=settings.LIBVIRT_POOL_DIR,
                    network=settings.LIBVIRT_NETWORK,
                    bridge=bridge_name(settings.LIBVIRT_NETWORK),
                    mode=settings.LIBVIRT_NETWORK_MODE,
                )
                shaping = settings.LIBVIRT_SHAPING
                if shaping is None:
                    shaping = localhost.kernel_can_shape()
                host = host_register(name="local", shaping=shaping, allow_kvm=settings.ALLOW_KVM, **args)
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Registered host 'local' at {uri} (domain type {host.domain_type}, "
                        f"bandwidth shaping {'on' if shaping else 'off: this kernel has no sfq qdisc'})."
                    )
                )
                return
            except (TransientHostError, HostError, libvirt.libvirtError) as exc:
                self.stdout.write(self.style.WARNING(f"libvirt at {uri} cannot be used: {exc}"))
        banner = "!" * 78
        self.stdout.write(
            self.style.WARNING(
                f"\n{banner}\n  NO LIBVIRTD: running on libvirt's test:///default hypervisor.\n"
                "  Instances are simulated: nothing boots, no console. Set LIBVIRT_DEFAULT_URI\n"
                f"  (e.g. qemu:///system) to use a real hypervisor.\n{banner}\n"
            )
        )
        host_register(
            name="simulated",
            uri="test:///default",
            storage_pool="default-pool",
            network="default",
            shaping=False,
            cpu_ratio=Decimal("4"),
            ram_ratio=Decimal("8"),
        )
