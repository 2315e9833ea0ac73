"""Install from an ISO, on libvirt's test driver: an empty disk, the ISO as a read-only IDE CD-ROM
booted before the disk, no seed; detaching the ISO leaves the disk to boot."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from compute.drivers.libvirt import connect, disk_volume, seed_volume
from compute.drivers.libvirt_xml import DomainConfig, backing_path_of, domain_xml
from compute.models import Image, Instance


@pytest.fixture
def install_iso(settings):
    (settings.IMAGE_STORE / "installer.iso").write_bytes(b"\0" * 32768 + b"\1CD001")
    return Image.objects.create(
        name="Installer",
        os_family="debian",
        os_version="12",
        format=Image.Format.ISO,
        size_bytes=32774,
        source_path="installer.iso",
        min_disk_gb=2,
    )


def domain_of(conn, uuid: str) -> ET.Element:
    """The persistent definition: what the next boot uses."""
    xml = conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return ET.fromstring(xml)  # noqa: S314 - libvirt's own output


def create(client, image, flavor, **extra):
    body = {"name": "from-cd", "image": str(image.pk), "flavor": str(flavor.pk), **extra}
    return client.post("/api/v1/instances", body, format="json")


def test_it_boots_an_install_iso_before_an_empty_disk(eager, api, alice, tenant_a, host, install_iso, flavor):
    client = api(alice)

    response = create(client, install_iso, flavor)

    assert response.status_code == 202, response.json()
    uuid = response.json()["id"]
    assert Instance.objects.get(pk=uuid).state == "running"
    assert Instance.objects.get(pk=uuid).iso_id == install_iso.pk
    conn = connect(host.uri)
    pool = conn.storagePoolLookupByName(host.storage_pool)
    root = domain_of(conn, uuid)
    assert [boot.get("dev") for boot in root.iterfind("./os/boot")] == ["cdrom", "hd"]
    [cdrom] = root.findall("./devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("volume") == install_iso.volume_name
    assert cdrom.find("target").attrib == {"dev": "hdc", "bus": "ide"}
    assert cdrom.find("readonly") is not None
    # the disk is empty (no backing image), and there is no cloud-init seed
    disks = [d.find("source").get("volume") for d in root.iterfind("./devices/disk[@device='disk']")]
    assert disks == [disk_volume(uuid)]
    assert backing_path_of(pool.storageVolLookupByName(disk_volume(uuid)).XMLDesc(0)) is None
    assert seed_volume(uuid) not in pool.listVolumes()
    assert install_iso.volume_name in pool.listVolumes()


def test_it_detaches_the_iso_so_the_disk_boots(eager, api, alice, tenant_a, host, install_iso, flavor):
    client = api(alice)
    uuid = create(client, install_iso, flavor).json()["id"]

    response = client.post(f"/api/v1/instances/{uuid}/detach-iso")

    assert response.status_code == 202, response.json()
    assert response.json()["state"] == "running"
    instance = Instance.objects.get(pk=uuid)
    assert instance.iso_id is None and instance.image_id == install_iso.pk
    root = domain_of(connect(host.uri), uuid)
    assert [boot.get("dev") for boot in root.iterfind("./os/boot")] == ["hd"]
    assert root.findall("./devices/disk[@device='cdrom']") == []
    steps = [(a.step, a.status) for a in instance.actions.filter(action="detach_iso").exclude(step="")]
    assert steps == [("eject", "done"), ("define", "done")]

    # a second detach has nothing to take out
    again = client.post(f"/api/v1/instances/{uuid}/detach-iso")
    assert again.status_code == 409
    assert again.json()["detail"] == "No ISO is attached to this instance."


def test_it_keeps_the_iso_through_a_stop_and_a_start(eager, api, alice, tenant_a, host, install_iso, flavor):
    client = api(alice)
    uuid = create(client, install_iso, flavor).json()["id"]
    assert client.post(f"/api/v1/instances/{uuid}/stop").status_code == 202
    assert client.post(f"/api/v1/instances/{uuid}/detach-iso").status_code == 202
    assert Instance.objects.get(pk=uuid).state == "stopped"  # back to where it was

    assert client.post(f"/api/v1/instances/{uuid}/start").status_code == 202

    root = domain_of(connect(host.uri), uuid)
    assert [boot.get("dev") for boot in root.iterfind("./os/boot")] == ["hd"]


def test_it_refuses_to_detach_from_an_instance_without_an_iso(eager, api, alice, tenant_a, host, image, flavor):
    uuid = create(api(alice), image, flavor).json()["id"]

    response = api(alice).post(f"/api/v1/instances/{uuid}/detach-iso")

    assert response.status_code == 409
    assert response.json() == {"detail": "No ISO is attached to this instance.", "code": "conflict"}


def test_it_refuses_a_password_for_an_install_iso(api, alice, tenant_a, host, install_iso, flavor):
    response = create(api(alice), install_iso, flavor, password="correct horse")

    assert response.status_code == 400
    assert response.json()["fields"] == {"password": ["An install ISO sets its passwords itself, in the installer."]}
    assert not Instance.objects.exists()


def test_it_never_boots_the_iso_in_rescue():
    cfg = DomainConfig(
        uuid="00000000-0000-0000-0000-000000000001",
        name="inst-1",
        domain_type="qemu",
        vcpus=1,
        memory_mb=128,
        pool="p",
        disk_volume="disk",
        seed_volume="seed",
        network="n",
        mac="02:00:00:00:00:01",
        vnc_listen="127.0.0.1",
        bandwidth_kbytes=None,
        iso_volume="img.iso",
        rescue_volume="rescue",
    )
    root = ET.fromstring(domain_xml(cfg))  # noqa: S314 - our own output

    assert [boot.get("dev") for boot in root.iterfind("./os/boot")] == ["hd"]
    assert [d.find("source").get("volume") for d in root.iterfind("./devices/disk")] == ["rescue", "disk"]
