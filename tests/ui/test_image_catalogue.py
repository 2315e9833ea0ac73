"""The image catalogue in the browser: the create page groups images by OS family and
version, and operators follow imports (progress, refusals) on /ops/, polled by htmx."""

from __future__ import annotations

import re

import pytest

from compute.models import Image
from tests.ui.conftest import browser_client

pytestmark = pytest.mark.django_db


def public(name: str, family: str, version: str, **fields) -> Image:
    return Image.objects.create(name=name, os_family=family, os_version=version, **{"size_bytes": 512, **fields})


def test_it_groups_the_images_of_the_create_page_by_family_then_version(alice, tenant_a):
    # given: images made in no particular order, a pending import, and a snapshot of tenant A
    public("Ubuntu 22.04 LTS", "ubuntu", "22.04")
    public("Debian 11", "debian", "11")
    public("Ubuntu 24.04 LTS", "ubuntu", "24.04")
    public("Debian 12", "debian", "12")
    public("Debian 13 (importing)", "debian", "13", state=Image.State.PENDING)
    Image.objects.create(
        name="web golden", os_family="debian", os_version="12", visibility="private", tenant=tenant_a, size_bytes=1
    )

    page = browser_client(alice).get("/instances/new").content.decode()

    # then: Debian before Ubuntu, newest version first, snapshots last; nothing unfinished
    families = re.findall(r'data-os-family="([^"]+)"', page)
    assert families == ["debian", "ubuntu", "snapshot"]
    versions = re.findall(r'role="group" aria-label="([^"]+)"', page)
    assert versions == ["Debian 12", "Debian 11", "Ubuntu 24.04", "Ubuntu 22.04", "Snapshots"]
    assert "Debian 13 (importing)" not in page
    assert page.index("Debian 12") < page.index("web golden")


def test_it_shows_operators_each_import_with_its_progress_or_refusal(operator):
    public("Debian 12", "debian", "12", format="qcow2", size_bytes=3 * 1024**2, min_disk_gb=2)
    public(
        "Ubuntu 24.04",
        "ubuntu",
        "24.04",
        state=Image.State.PENDING,
        source_url="http://images.example/noble.img",
        progress_bytes=25 * 1024**2,
        expected_bytes=100 * 1024**2,
    )
    public(
        "Alma 9",
        "almalinux",
        "9",
        state=Image.State.ERROR,
        source_url="http://images.example/alma.qcow2",
        error_field="sha256",
        error_message="The image's SHA-256 is abc, not the one given.",
    )
    client = browser_client(operator)

    page = client.get("/ops/").content.decode()

    assert 'id="ops-images"' in page and "every 2s" in page  # polled fast while one imports
    assert "Importing: 25.0\xa0MB of 100.0\xa0MB" in page
    assert 'value="25"' in page
    assert "sha256: The image&#x27;s SHA-256 is abc" in page
    assert "3.0\xa0MB" in page and "2 GiB" in page

    # the panel alone, as htmx polls it; at rest it polls slowly
    Image.objects.filter(state=Image.State.PENDING).update(state=Image.State.ACTIVE, progress_bytes=100 * 1024**2)
    panel = client.get("/ops/?panel=images", HTTP_HX_REQUEST="true").content.decode()
    assert panel.lstrip().startswith("<div") and "Operations" not in panel
    assert "every 10s" in panel and "Importing" not in panel


def test_it_keeps_the_images_panel_from_everyone_but_operators(alice, tenant_a):
    response = browser_client(alice).get("/ops/?panel=images")
    assert response.status_code in (302, 403, 404)
