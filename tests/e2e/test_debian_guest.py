"""A real Debian 12 cloud guest, end to end through the REST API: the customer's SSH key and the
instance's name reach the guest through the NoCloud seed, cloud-init grows the root file system
to the flavor's disk, stop/start keeps the disk, rebuild gives a fresh one the key still opens.
"""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import libvirt
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings as django_settings

from compute.drivers.libvirt import disk_volume, seed_volume
from compute.models import Flavor, IpAllocation
from tests.conftest import RUN_ID, client_for, token_for
from tests.e2e.conftest import DEBIAN_BOOT_WITHIN

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(django_settings.BASE_DIR) / "tests" / "artifacts"
STOP_WITHIN = 150
DISK_GB = 4


def wait_for(what: str, check, within: float, every: float = 1.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within:.0f} s")


def wait_for_state(api, instance_id: str, state: str, within: float) -> None:
    seen: list[str] = []

    def reached() -> bool:
        body = api.get(f"/api/v1/instances/{instance_id}").json()
        seen.append(body["state"])
        assert body["state"] != "error", f"the instance went into error: {body}"
        return body["state"] == state

    try:
        wait_for(f"state {state}", reached, within)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last seen: {seen[-1:]})") from None


class Console:
    """What the guest writes to its serial console, read through libvirt while it runs, kept
    as a test artifact: the one view of a guest whose network never came up."""

    def __init__(self, conn: libvirt.virConnect, uuid: str, name: str) -> None:
        self.conn, self.uuid, self.path = conn, uuid, ARTIFACTS / f"{name}.log"
        self.seen = bytearray()

    @contextmanager
    def recording(self):
        stream = self.conn.newStream(0)
        self.conn.lookupByUUIDString(self.uuid).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)

        def read() -> None:
            while True:
                try:
                    chunk = stream.recv(4096)
                except libvirt.libvirtError:
                    return
                if not chunk or not isinstance(chunk, bytes):
                    return
                self.seen.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield self
        finally:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass  # the domain stopped and closed it first
            reader.join(timeout=5)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(bytes(self.seen))

    def tail(self) -> str:
        return bytes(self.seen[-3000:]).decode(errors="replace")


def ssh_login(ip: str, key: paramiko.PKey, console: Console, within: float = DEBIAN_BOOT_WITHIN) -> paramiko.SSHClient:
    """Log in as `debian` with the key, retrying until the guest has booted and cloud-init put
    the key in place; fail with the end of the serial console if it never works."""
    deadline = time.monotonic() + within
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        client = paramiko.SSHClient()
        # Every guest makes fresh host keys on its first boot: nothing to pin them against.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507
        try:
            client.connect(
                ip,
                username="debian",
                pkey=key,
                timeout=5,
                banner_timeout=10,
                auth_timeout=10,
                allow_agent=False,
                look_for_keys=False,
            )
            return client
        except (OSError, paramiko.SSHException) as exc:
            client.close()
            last_error = exc
            time.sleep(3)
    raise AssertionError(
        f"no SSH login as debian@{ip} within {within:.0f} s (last error: {last_error!r}); "
        f"the guest's serial console ended with:\n{console.tail()}"
    )


def run(client: paramiko.SSHClient, command: str, timeout: float = 60) -> tuple[int, str]:
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    status = stdout.channel.recv_exit_status()
    return status, out + stderr.read().decode()


def checked(client: paramiko.SSHClient, command: str, timeout: float = 60) -> str:
    status, out = run(client, command, timeout)
    assert status == 0, f"{command!r} exited {status}: {out}"
    return out.strip()


@pytest.fixture
def customer_key():
    """A key pair of the customer's: the private half as paramiko loads it, the public half in
    OpenSSH's one-line form."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode())), f"{public.decode()} customer@e2e"


def test_it_logs_in_to_a_debian_guest_with_the_customers_key(
    hypervisor, real_host, debian_image, start_worker, alice, tenant_a, customer_key, settings
):
    flavor = Flavor.objects.create(
        name="e2e.debian",
        vcpus=1,
        memory_mb=512,
        disk_gb=DISK_GB,
        bandwidth_mbit=100,
        traffic_gb=10,
        sla_percent=Decimal("99.9"),
    )
    # The worker's own setting (its environment is made before the test body runs): a stop
    # that has to wait for this timeout means the guest ignored the ACPI power button.
    start_worker(real_host.queue, {"INSTANCE_STOP_TIMEOUT": str(STOP_WITHIN)})
    api = client_for(token=token_for(alice, tenant_a))
    key, public_key = customer_key
    response = api.post("/api/v1/ssh-keys", {"name": "laptop", "public_key": public_key}, format="json")
    assert response.status_code == 201, response.json()
    key_id = response.json()["id"]
    name = f"debian-{RUN_ID[:6]}"

    # given: an instance created through the API with the customer's key
    began = time.monotonic()
    response = api.post(
        "/api/v1/instances",
        {"name": name, "image": str(debian_image.pk), "flavor": str(flavor.pk), "ssh_key_ids": [key_id]},
        format="json",
    )
    assert response.status_code == 202, response.json()
    created = response.json()
    instance_id, ip = created["id"], created["ip_address"]
    wait_for_state(api, instance_id, "running", within=300)
    running_after = time.monotonic() - began
    console = Console(hypervisor, instance_id, f"debian-{instance_id}")

    # when: the customer logs in with a real SSH client, as the image's default user
    with console.recording():
        ssh = ssh_login(ip, key, console)
        login_after = time.monotonic() - began
        print(f"\nE2E Debian: create -> RUNNING {running_after:.1f} s, create -> SSH login {login_after:.1f} s")
        try:
            # then: the guest is named after the instance, and / fills the flavor's disk
            assert checked(ssh, "hostname") == name
            # every cloud-init module ran without an error on what the seed said
            status = checked(ssh, "cloud-init status --wait --long", timeout=DEBIAN_BOOT_WITHIN)
            assert "status: done" in status and "DataSourceNoCloud [seed=/dev/vdb]" in status, status
            disk = int(checked(ssh, "cat /sys/class/block/vda/size")) * 512
            root_fs = int(checked(ssh, "df -B1 --output=size / | tail -n 1"))
            print(f"E2E Debian: disk {disk} B, root file system {root_fs} B")
            assert disk == DISK_GB * 2**30
            assert root_fs > 0.9 * disk, f"/ was not grown: {root_fs} of {disk} bytes"
            assert checked(ssh, "sudo -n id -u") == "0"
            checked(ssh, f"echo kept-{instance_id} > ~/kept.txt && sync")
        finally:
            ssh.close()

    # when: stopped and started through the API, the file is still there
    stopping = time.monotonic()
    with console.recording():
        assert api.post(f"/api/v1/instances/{instance_id}/stop").status_code == 202
        wait_for_state(api, instance_id, "stopped", within=STOP_WITHIN + 30)
    stopped_after = time.monotonic() - stopping
    print(f"E2E Debian: stop -> STOPPED {stopped_after:.1f} s")
    assert stopped_after < STOP_WITHIN - 10, "the guest ignored the ACPI power button"
    restarted = time.monotonic()
    assert api.post(f"/api/v1/instances/{instance_id}/start").status_code == 202
    wait_for_state(api, instance_id, "running", within=120)
    with console.recording():
        ssh = ssh_login(ip, key, console)
        print(f"E2E Debian: start -> SSH login {time.monotonic() - restarted:.1f} s")
        try:
            assert checked(ssh, "cat ~/kept.txt") == f"kept-{instance_id}"
        finally:
            ssh.close()

    # when: rebuilt from the same image, the key opens a fresh disk without the file
    rebuilt = time.monotonic()
    response = api.post(f"/api/v1/instances/{instance_id}/rebuild", {"image": str(debian_image.pk)}, format="json")
    assert response.status_code == 202, response.json()
    wait_for_state(api, instance_id, "running", within=300)
    with console.recording():
        ssh = ssh_login(ip, key, console)
        print(f"E2E Debian: rebuild -> SSH login {time.monotonic() - rebuilt:.1f} s")
        try:
            assert checked(ssh, "hostname") == name
            status, _out = run(ssh, "test -e ~/kept.txt")
            assert status == 1, "the file survived the rebuild"
        finally:
            ssh.close()

    # finally: delete leaves no domain, no volume and no address behind
    assert api.delete(f"/api/v1/instances/{instance_id}").status_code == 202
    wait_for_state(api, instance_id, "deleted", within=180)
    with pytest.raises(libvirt.libvirtError):
        hypervisor.lookupByUUIDString(instance_id)
    pool = hypervisor.storagePoolLookupByName(real_host.storage_pool)
    pool.refresh(0)
    assert disk_volume(instance_id) not in pool.listVolumes()
    assert seed_volume(instance_id) not in pool.listVolumes()
    assert not IpAllocation.objects.filter(instance_id=instance_id).exists()
    print(f"E2E Debian: whole test {time.monotonic() - began:.1f} s")
