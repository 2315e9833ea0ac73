"""The NoCloud seed as cloud-init 22+ reads it, and where the domain puts it: a read-only
virtio disk, the one bus every mainstream cloud kernel has a driver for."""

from __future__ import annotations

import io
import json
import uuid
import xml.etree.ElementTree as ET

import pycdlib
import pytest

from compute.cloudinit import build_seed, hostname_for
from compute.drivers.libvirt_xml import DomainConfig, domain_xml
from tests.seeds import read_seed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEX me@laptop: {x}"


def seed(**overrides) -> bytes:
    args = {"uuid": str(uuid.uuid4()), "hostname": "web-1", "ssh_keys": [KEY], "user_data": ""} | overrides
    return build_seed(**args)


def iso_of(data: bytes) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    return iso


def test_it_gives_cloud_init_the_instance_id_hostname_and_keys():
    instance_id = str(uuid.uuid4())
    meta = json.loads(read_seed(seed(uuid=instance_id, ssh_keys=[KEY, "ssh-rsa AAAAB3 other"]))["meta-data"])
    assert meta == {"instance-id": instance_id, "local-hostname": "web-1", "public-keys": [KEY, "ssh-rsa AAAAB3 other"]}


def test_it_labels_the_volume_cidata_and_names_files_as_linux_mounts_them():
    iso = iso_of(seed())
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        # Linux mounts the Rock Ridge names; cloud-init opens exactly these.
        names = sorted(
            child.rock_ridge.name().decode()
            for child in iso.list_children(rr_path="/")
            if child.rock_ridge is not None and not child.is_dot() and not child.is_dotdot()
        )
    finally:
        iso.close()
    assert names == ["meta-data", "user-data", "vendor-data"]


def test_it_writes_no_network_config_so_cloud_init_takes_dhcp_on_the_first_nic():
    files = read_seed(seed())
    assert "network-config" not in files
    assert "network-interfaces" not in json.loads(files["meta-data"])


def test_it_puts_the_providers_defaults_in_vendor_data_and_leaves_user_data_to_the_tenant():
    files = read_seed(seed(user_data="#cloud-config\nmanage_etc_hosts: false\n"))
    header, _, body = files["vendor-data"].partition(b"\n")
    assert header == b"#cloud-config"
    assert json.loads(body) == {"manage_etc_hosts": "localhost"}
    assert files["user-data"] == b"#cloud-config\nmanage_etc_hosts: false\n"


def test_it_sends_an_empty_cloud_config_when_the_tenant_gave_no_user_data():
    assert read_seed(seed(user_data=""))["user-data"] == b"#cloud-config\n{}\n"


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("web-1", "web-1"),
        ("Web Server #2", "web-server-2"),
        ("--db--", "db"),
        ("ünïcode", "n-code"),
        ("x" * 80, "x" * 63),
        ("]]>", "vm-12345678"),
    ],
)
def test_it_makes_the_hostname_a_valid_label(name, hostname):
    assert hostname_for(name, "12345678-aaaa-bbbb-cccc-dddddddddddd") == hostname


def config(**overrides) -> DomainConfig:
    args = {
        "uuid": "12345678-aaaa-bbbb-cccc-dddddddddddd",
        "name": "inst-12345678-aaaa-bbbb-cccc-dddddddddddd",
        "domain_type": "qemu",
        "vcpus": 1,
        "memory_mb": 512,
        "pool": "pool",
        "disk_volume": "inst-disk.qcow2",
        "seed_volume": "inst-seed.iso",
        "network": "net",
        "mac": "02:12:34:56:78:aa",
        "vnc_listen": "127.0.0.1",
        "bandwidth_kbytes": None,
    } | overrides
    return DomainConfig(**args)


def test_it_attaches_the_seed_as_a_read_only_virtio_disk_after_the_root_disk():
    disks = ET.fromstring(domain_xml(config())).findall("./devices/disk")  # noqa: S314 - our own XML
    assert [(d.get("device"), d.find("target").attrib) for d in disks] == [
        ("disk", {"dev": "vda", "bus": "virtio"}),
        ("disk", {"dev": "vdb", "bus": "virtio"}),
    ]
    root, seed_disk = disks
    assert root.find("source").attrib == {"pool": "pool", "volume": "inst-disk.qcow2"}
    assert root.find("readonly") is None
    assert seed_disk.find("source").attrib == {"pool": "pool", "volume": "inst-seed.iso"}
    assert seed_disk.find("driver").get("type") == "raw"
    assert seed_disk.find("readonly") is not None


def test_it_attaches_no_seed_when_there_is_none():
    disks = ET.fromstring(domain_xml(config(seed_volume=None))).findall("./devices/disk")  # noqa: S314 - our own XML
    assert [d.find("target").get("dev") for d in disks] == ["vda"]
