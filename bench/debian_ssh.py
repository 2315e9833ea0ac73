"""Issue 12: a real Debian 12 guest, API POST -> first SSH login vs `virsh start` -> first login.

The guest is the image portal/scripts/build-debian-image.sh makes (cloud-init, openssh), 1 vCPU
and 512 MiB, on a dir pool and an isolated network made for this run and removed at the end.

Portal path, timed from the POST: the API claims and allocates, a real Celery worker builds
(disk overlay, seed with the customer's key, DHCP entry, define, start), the guest boots,
cloud-init puts the key in place, and the bench logs in as `debian` with that key. Plain path,
timed from `virsh start`: the same guest prepared beforehand by the same driver calls
(untimed: overlay, seed with the same key, DHCP entry, domain defined), booted by virsh alone,
logged in the same way. The base image is in the pool before either runs. Runs alternate,
portal first; each guest is destroyed once logged in, so one boots at a time.
"""

from __future__ import annotations

import io
import ipaddress
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import libvirt
import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from bench import processes, seed
from bench.environment import BASE_DIR, BenchEnvironment
from bench.load import request_json
from bench.real_vm import destroy, remove_everything, unavailable
from bench.report import Figure, percentile, skipped
from compute import cloudinit, localhost
from compute.driver_refs import host_ref, image_ref
from compute.drivers.base import DomainSpec
from compute.drivers.libvirt import domain_name, driver_for
from compute.hosts import host_register
from compute.models import Image, Instance, InstanceState, IpPool
from compute.services import mac_for
from tenants.models import SshKey

AREA = "debian-ssh"
URI = "qemu:///system"
BUILD_SCRIPT = BASE_DIR / "portal" / "scripts" / "build-debian-image.sh"
DEBIAN_IMAGE = BASE_DIR / "var" / "cache" / "debian-image" / "debian-12.qcow2"
TARGET_RATIO = 1.10
LOGIN_WITHIN = 600.0


def key_pair() -> tuple[paramiko.PKey, str]:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), public.decode() + " bench"


def first_login(ip: str, key: paramiko.PKey, began: float) -> float:
    """Seconds from `began` until `debian@ip` accepts the key and runs a command."""
    while time.monotonic() - began < LOGIN_WITHIN:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - fresh guest keys
        try:
            client.connect(
                ip,
                username="debian",
                pkey=key,
                timeout=3,
                banner_timeout=5,
                auth_timeout=5,
                allow_agent=False,
                look_for_keys=False,
            )
            _in, out, _err = client.exec_command("true", timeout=30)
            if out.channel.recv_exit_status() == 0:
                return time.monotonic() - began
        except (OSError, paramiko.SSHException):
            time.sleep(1)
        finally:
            client.close()
    raise RuntimeError(f"no SSH login to {ip} within {LOGIN_WITHIN:.0f} s")


class Runs:
    def __init__(self, conn, host, image, flavor, web_port: int, account: seed.Account, key, public_key: str):
        self.conn, self.host, self.image, self.flavor = conn, host, image, flavor
        self.port, self.headers, self.key, self.public_key = web_port, account.headers, key, public_key
        self.key_id = str(SshKey.objects.get(tenant=account.tenant, public_key=public_key).pk)
        pool = IpPool.objects.get(host=host)
        self.spare_ips = [str(ipaddress.ip_address(pool.last) - n) for n in range(20)]

    def portal(self) -> float:
        began = time.monotonic()
        status, body = request_json(
            self.port,
            "POST",
            "/api/v1/instances",
            headers=self.headers,
            body={
                "name": f"deb-{uuid.uuid4().hex[:6]}",
                "image": str(self.image.pk),
                "flavor": str(self.flavor.pk),
                "ssh_key_ids": [self.key_id],
            },
        )
        if status != 202:
            raise RuntimeError(f"POST /api/v1/instances answered {status}: {body}")
        seconds = first_login(body["ip_address"], self.key, began)
        state = Instance.objects.values_list("state", flat=True).get(pk=body["id"])
        if state != InstanceState.RUNNING:
            raise RuntimeError(f"logged in, but the instance is {state}")
        destroy(self.conn, body["id"])
        return seconds

    def plain(self) -> float:
        pk = uuid.uuid4()
        text = str(pk)
        mac, ip = mac_for(pk), self.spare_ips.pop(0)
        hostname = cloudinit.hostname_for(f"plain-{text[:6]}", text)
        drv = driver_for(host_ref(self.host))
        drv.ensure_disk(text, image_ref(self.image), self.flavor.disk_gb)
        seed_iso = cloudinit.build_seed(uuid=text, hostname=hostname, ssh_keys=[self.public_key], user_data="")
        drv.ensure_seed(text, seed_iso)
        drv.ensure_dhcp(mac, ip, hostname)
        drv.ensure_defined(
            DomainSpec(
                uuid=text,
                vcpus=self.flavor.vcpus,
                memory_mb=self.flavor.memory_mb,
                disk_gb=self.flavor.disk_gb,
                mac=mac,
                bandwidth_kbytes=None,
            )
        )
        virsh = shutil.which("virsh") or "virsh"
        began = time.monotonic()
        subprocess.run([virsh, "-q", "-c", URI, "start", domain_name(text)], check=True, capture_output=True)
        seconds = first_login(ip, self.key, began)
        destroy(self.conn, text)
        return seconds


def run(env: BenchEnvironment, *, quick: bool = False) -> list[Figure]:
    if reason := unavailable():
        return [skipped(AREA, reason)]
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(DEBIAN_IMAGE)], capture_output=True, text=True, timeout=1800, check=False
    )
    if built.returncode != 0:
        return [skipped(AREA, f"skipped: the Debian image could not be built: {built.stderr.strip()[-300:]}")]
    env.reset_data()
    account = seed.account()
    key, public_key = key_pair()
    SshKey.objects.create(tenant=account.tenant, name="bench", public_key=public_key, fingerprint="bench")
    name = f"benchd-{env.run_id}"
    pool_dir = Path("/var/lib/libvirt/images") / f"portal-{name}"
    conn = libvirt.open(URI)
    portal: list[float] = []
    plain: list[float] = []
    try:
        args = localhost.prepare(URI, pool=name, pool_dir=pool_dir, network=name, bridge=f"vbd{env.run_id[:6]}")
        host = host_register(name=name, shaping=localhost.kernel_can_shape(), allow_kvm=settings.ALLOW_KVM, **args)
        (settings.IMAGE_STORE / "debian-12.qcow2").symlink_to(DEBIAN_IMAGE)
        image = Image.objects.create(
            name="Debian 12",
            os_family="debian",
            os_version="12",
            size_bytes=DEBIAN_IMAGE.stat().st_size,
            source_path="debian-12.qcow2",
            min_disk_gb=2,
            min_memory_mb=256,
        )
        flavor = seed.flavor(name="bench.debian", vcpus=1, memory_mb=512, disk_gb=4)
        driver_for(host_ref(host)).ensure_base_image(image_ref(image))
        web = processes.start_web(env)
        processes.start_workers(env, [[host.queue]])
        runs = Runs(conn, host, image, flavor, web.port, account, key, public_key)
        for n in range(1 if quick else 3):
            portal.append(runs.portal())
            plain.append(runs.plain())
            print(f"   run {n + 1}: portal {portal[-1]:.1f} s, virsh {plain[-1]:.1f} s", flush=True)
    finally:
        processes.stop_all()
        remove_everything(conn, name, pool_dir)
        conn.close()
    to_login, floor = percentile(portal, 50), percentile(plain, 50)
    return [
        Figure(
            AREA,
            f"Debian 12 (1 vCPU, 512 MiB): POST -> first SSH login, median of {len(portal)}",
            to_login,
            "s",
            baseline=floor,
            baseline_name="virsh start -> first SSH login",
            target=f"ratio <= {TARGET_RATIO}",
            passed=to_login / floor <= TARGET_RATIO,
            detail={"portal_s": portal, "virsh_s": plain},
        )
    ]
