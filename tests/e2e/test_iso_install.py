"""Install from an ISO on a real guest: a bootable ISO built here (isolinux from Debian's
packages, El Torito, no mount) boots before the empty disk and its boot loader announces itself
on the serial console, which the API's console log shows; detaching the ISO ejects the CD of the
running guest, and the next boot is from the disk, not the CD.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import libvirt
import pytest

from compute.models import Flavor, Image
from tests.conftest import client_for, token_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
# isolinux announces itself on the serial port (SERIAL below) when the CD boots; an empty disk
# prints nothing. (Its SAY and DISPLAY text reached the screen only, not the serial port.)
MARKER = "ISOLINUX 6."
ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
# isolinux talks on the serial port, then hands the boot back to the BIOS, which tries the
# next device: the (empty) disk.
ISOLINUX_CFG = """SERIAL 0 115200
PROMPT 0
TIMEOUT 1
DEFAULT next
LABEL next
  LOCALBOOT -1
"""


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
    response = api.get(f"/api/v1/instances/{instance_id}/console-log")
    assert response.status_code == 200, response.json()
    return response.json()["log"]


@pytest.fixture
def install_iso(hypervisor, tmp_path, settings) -> Image:
    """A tiny bootable install CD, registered by the operator from the image store."""
    if shutil.which("xorriso") is None or not ISOLINUX.exists() or not LDLINUX.exists():
        pytest.fail("xorriso and isolinux are needed (portal/scripts/system-deps.sh installs them)")
    tree = tmp_path / "cd"
    tree.mkdir()
    shutil.copy(ISOLINUX, tree / "isolinux.bin")
    shutil.copy(LDLINUX, tree / "ldlinux.c32")
    (tree / "isolinux.cfg").write_text(ISOLINUX_CFG)
    iso = settings.IMAGE_STORE / "installer.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(iso), "-V", "INSTALLER", "-b", "isolinux.bin"]
        + ["-c", "boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(tree)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Image.objects.create(
        name="Installer CD",
        os_family="linux",
        os_version="installer",
        format=Image.Format.ISO,
        size_bytes=iso.stat().st_size,
        source_path=iso.name,
        min_disk_gb=1,
        min_memory_mb=128,
    )


def cdroms(dom: libvirt.virDomain, flags: int = 0) -> list[ET.Element]:
    return ET.fromstring(dom.XMLDesc(flags)).findall("./devices/disk[@device='cdrom']")  # noqa: S314


def test_it_boots_an_install_iso_then_the_disk(hypervisor, real_host, install_iso, start_worker, alice, tenant_a):
    flavor = Flavor.objects.create(
        name="e2e.iso", vcpus=1, memory_mb=128, disk_gb=1, bandwidth_mbit=10, traffic_gb=1, sla_percent=Decimal(99)
    )
    start_worker(real_host.queue, {"INSTANCE_STOP_TIMEOUT": "5"})
    api = client_for(token=token_for(alice, tenant_a))

    # when: a customer creates an instance from the install CD
    began = time.monotonic()
    body = {"name": "from-cd", "image": str(install_iso.pk), "flavor": str(flavor.pk)}
    response = api.post("/api/v1/instances", body, format="json")
    assert response.status_code == 202, response.json()
    uuid = response.json()["id"]
    wait_for_state(api, uuid, "running", within=180)

    # then: the CD's boot loader ran (it wrote the marker on the serial console), as the API's
    # console log shows
    wait_for("the ISO's marker in the console log", lambda: MARKER in console_log(api, uuid), within=120)
    print(f"\nE2E ISO: create -> the ISO's boot loader on the console {time.monotonic() - began:.1f} s")
    dom = hypervisor.lookupByUUIDString(uuid)
    [cdrom] = cdroms(dom)
    assert cdrom.find("source") is not None and cdrom.find("target").get("bus") == "ide"

    # when: the customer detaches the ISO while the guest runs
    assert api.post(f"/api/v1/instances/{uuid}/detach-iso").status_code == 202
    wait_for_state(api, uuid, "running", within=120)

    # then: the running guest's drive is empty (libvirt keeps a <source> with no file in it),
    # and the definition has no CD any more
    [drive] = cdroms(dom)
    source = drive.find("source")
    assert source is None or not ({"file", "volume"} & set(source.attrib)), ET.tostring(drive)
    assert cdroms(dom, libvirt.VIR_DOMAIN_XML_INACTIVE) == []

    # when: power-cycled, it boots from the disk: the CD's boot loader does not run again
    assert api.post(f"/api/v1/instances/{uuid}/stop").status_code == 202
    wait_for_state(api, uuid, "stopped", within=120)
    # (SeaBIOS retries its boot devices every 60 s, so the CD may have booted more than once)
    booted_from_cd = console_log(api, uuid).count(MARKER)
    assert api.post(f"/api/v1/instances/{uuid}/start").status_code == 202
    wait_for_state(api, uuid, "running", within=120)
    assert cdroms(dom) == []
    time.sleep(15)  # the BIOS has long reached the boot devices by then
    assert console_log(api, uuid).count(MARKER) == booted_from_cd

    # finally: nothing of it stays on the host
    assert api.delete(f"/api/v1/instances/{uuid}").status_code == 202
    wait_for_state(api, uuid, "deleted", within=120)
    pool = hypervisor.storagePoolLookupByName(real_host.storage_pool)
    pool.refresh(0)
    assert [name for name in pool.listVolumes() if uuid in name] == []
