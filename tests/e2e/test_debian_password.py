"""A Debian 12 cloud guest with no SSH key: the API makes up a password, shows it once, and the
customer logs in with it over SSH as the image's default user. Only the password's SHA-512 crypt
hash went into the seed, and the portal kept nothing of it once the build was done.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import paramiko
import pytest

from compute.models import Flavor, Instance, InstanceAction
from tests.conftest import RUN_ID, client_for, token_for
from tests.e2e.conftest import DEBIAN_BOOT_WITHIN

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_for_state(api, instance_id: str, state: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/instances/{instance_id}").json()
        assert body["state"] != "error", body
        if body["state"] == state:
            return
        time.sleep(1)
    raise AssertionError(f"state {state}: not within {within} s")


def password_login(api, instance_id: str, ip: str, password: str) -> paramiko.SSHClient:
    """Log in as `debian` with the password, retrying until the guest has booted and cloud-init
    set it; fail with the end of the console log (read through the API) if it never works."""
    deadline = time.monotonic() + DEBIAN_BOOT_WITHIN
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        client = paramiko.SSHClient()
        # Every guest makes fresh host keys on its first boot: nothing to pin them against.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507
        try:
            client.connect(
                ip,
                username="debian",
                password=password,
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
    log = api.get(f"/api/v1/instances/{instance_id}/console-log", {"max_kib": 4}).json()["log"]
    raise AssertionError(f"no password login as debian@{ip} (last error: {last_error!r}); console:\n{log}")


def test_it_logs_in_with_the_password_the_api_made_up(
    hypervisor, real_host, debian_image, start_worker, alice, tenant_a
):
    flavor = Flavor.objects.create(
        name="e2e.debpw", vcpus=1, memory_mb=512, disk_gb=4, bandwidth_mbit=10, traffic_gb=1, sla_percent=Decimal(99)
    )
    start_worker(real_host.queue, {"INSTANCE_STOP_TIMEOUT": "60"})
    api = client_for(token=token_for(alice, tenant_a))

    # given: an instance with no SSH key, and a password made up by the API
    began = time.monotonic()
    body = {
        "name": f"pw-{RUN_ID[:6]}",
        "image": str(debian_image.pk),
        "flavor": str(flavor.pk),
        "generate_password": True,
    }
    response = api.post("/api/v1/instances", body, format="json")
    assert response.status_code == 202, response.json()
    created = response.json()
    password, instance_id = created["password"], created["id"]
    assert password and "password" not in api.get(f"/api/v1/instances/{instance_id}").json()
    wait_for_state(api, instance_id, "running", within=300)

    # when: the customer logs in with it, as the image's default user
    ssh = password_login(api, instance_id, created["ip_address"], password)
    print(f"\nE2E Debian password: create -> SSH login with the password {time.monotonic() - began:.1f} s")
    try:
        _stdin, stdout, _stderr = ssh.exec_command("id -un; sudo -n true && echo sudo-ok", timeout=60)
        out = stdout.read().decode().split()
    finally:
        ssh.close()

    # then: it is that user, and the portal holds nothing of the password, not even its hash
    assert out == ["debian", "sudo-ok"]
    stored = json.dumps(
        [
            Instance.objects.filter(pk=instance_id).values().get(),
            *InstanceAction.objects.filter(instance_id=instance_id).values(),
        ],
        default=str,
    )
    assert password not in stored
    assert Instance.objects.get(pk=instance_id).password_hash == ""

    assert api.delete(f"/api/v1/instances/{instance_id}").status_code == 202
    wait_for_state(api, instance_id, "deleted", within=180)
