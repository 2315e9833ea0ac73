"""Rescue mode on a real guest: the tiny image boots as the rescue system with the customer's
disk as its second disk (vdb, the customer's boot counter on it untouched), the console log
shows both boots, unrescue boots the customer's own disk again, delete leaves nothing behind.
"""

from __future__ import annotations

import re
import threading
import time
from decimal import Decimal

import libvirt
import pytest

from compute.models import Flavor, Image
from tests.conftest import client_for, token_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_for(what: str, check, within: float, every: float = 0.5):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {within} s")


def wait_for_state(api, instance_id: str, state: str, within: float) -> dict:
    def reached():
        body = api.get(f"/api/v1/instances/{instance_id}").json()
        assert body["state"] != "error", body
        return body if body["state"] == state else None

    return wait_for(f"state {state}", reached, within)


def console_log(api, instance_id: str) -> str:
    response = api.get(f"/api/v1/instances/{instance_id}/console-log", {"max_kib": 256})
    assert response.status_code == 200, response.json()
    return response.json()["log"]


def serial_command(hypervisor: libvirt.virConnect, uuid: str, command: str, answer: bytes) -> re.Match:
    """Type `command` on the guest's serial shell (through libvirt's console stream) until the
    output matches the regular expression `answer`."""
    stream = hypervisor.newStream(0)
    hypervisor.lookupByUUIDString(uuid).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = stream.recv(4096)
            except libvirt.libvirtError:
                return
            if not chunk or not isinstance(chunk, bytes):
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stream.send(command.encode() + b"\r")
            for _ in range(15):
                if match := re.search(answer, bytes(seen)):
                    return match
                time.sleep(0.2)
        raise AssertionError(f"no {answer!r} on the serial console; saw: {bytes(seen[-800:])!r}")
    finally:
        stream.abort()
        reader.join(timeout=5)


def test_it_rescues_a_real_guest_with_its_disk_attached(
    hypervisor, real_host, tiny_image, start_worker, alice, tenant_a, settings
):
    # given: the operator offers the tiny image as the rescue system, and a running guest
    Image.objects.filter(pk=tiny_image.pk).update(rescue=True)
    flavor = Flavor.objects.create(
        name="e2e.rescue", vcpus=1, memory_mb=256, disk_gb=1, bandwidth_mbit=10, traffic_gb=1, sla_percent=Decimal(99)
    )
    start_worker(real_host.queue, {"INSTANCE_STOP_TIMEOUT": "20"})
    api = client_for(token=token_for(alice, tenant_a))
    body = {"name": "locked-out", "image": str(tiny_image.pk), "flavor": str(flavor.pk)}
    response = api.post("/api/v1/instances", body, format="json")
    assert response.status_code == 202, response.json()
    uuid = response.json()["id"]
    wait_for_state(api, uuid, "running", within=180)
    # the guest's first boot shows in its console log, read through the API
    wait_for("first boot in the console log", lambda: "TINY-IMAGE boot=1 " in console_log(api, uuid), within=120)

    # when
    began = time.monotonic()
    assert api.post(f"/api/v1/instances/{uuid}/rescue").status_code == 202
    body = wait_for_state(api, uuid, "rescue", within=180)
    print(f"\nE2E rescue: rescue -> RESCUE {time.monotonic() - began:.1f} s")

    # then: the rescue system runs with two disks, the second one the customer's (its boot
    # counter still at 1: nothing of it booted), and the console is offered
    assert body["power_state"] == "running"
    match = serial_command(
        hypervisor,
        uuid,
        "s=$(sed 's/.*counter_sector=\\([0-9]*\\).*/\\1/' /proc/cmdline);"
        " echo DISKS=$(ls /sys/block | tr '\\n' ,)BOOT=$(dd if=/dev/vdb bs=512 skip=$s count=1 | head -n 1)=",
        rb"DISKS=([a-z0-9,]+)BOOT=([^=\r\n]*)=",
    )
    assert match.group(1).decode().split(",")[:2] == ["vda", "vdb"]
    assert match.group(2) == b"TINY-IMAGE-BOOTCOUNT 1"
    response = api.post(f"/api/v1/instances/{uuid}/console")
    assert response.status_code == 201, response.json()

    # when: out of rescue
    assert api.post(f"/api/v1/instances/{uuid}/unrescue").status_code == 202
    wait_for_state(api, uuid, "running", within=180)

    # then: the customer's own disk boots again (its second boot), and the log kept all three
    wait_for(
        "the disk's second boot in the console log", lambda: "TINY-IMAGE boot=2 " in console_log(api, uuid), within=120
    )
    assert console_log(api, uuid).count("TINY-IMAGE boot=1 ") == 2  # the first boot, then the rescue's
    dom = hypervisor.lookupByUUIDString(uuid)
    assert "-rescue.qcow2" not in dom.XMLDesc(0)

    # finally: delete leaves no volume of it (disk, seed, console log)
    assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    wait_for_state(api, uuid, "deleted", within=120)
    pool = hypervisor.storagePoolLookupByName(real_host.storage_pool)
    pool.refresh(0)
    assert [name for name in pool.listVolumes() if uuid in name] == []
