"""The serial console log: virtlogd writes it into the host's pool directory (the domain XML says
where), the API reads its end back through libvirt. libvirt's test driver keeps no file contents,
so reading real bytes is tested end to end (tests/e2e/test_iso_install.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from compute.drivers.libvirt import connect, console_log_volume
from compute.drivers.libvirt_xml import pool_path_of
from compute.models import Instance
from tests.conftest import client_for, token_for


@pytest.fixture
def running(eager, api, alice, tenant_a, host, image, flavor) -> Instance:
    body = {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk)}
    return Instance.objects.get(pk=api(alice).post("/api/v1/instances", body, format="json").json()["id"])


def test_it_logs_the_serial_console_into_the_pool(running):
    conn = connect(running.host.uri)
    root = ET.fromstring(conn.lookupByUUIDString(str(running.pk)).XMLDesc(0))  # noqa: S314 - libvirt's own output
    pool_path = pool_path_of(conn.storagePoolLookupByName(running.host.storage_pool).XMLDesc(0))

    log = root.find("./devices/serial[@type='pty']/log")

    assert log is not None
    assert log.attrib == {"file": f"{pool_path}/{console_log_volume(str(running.pk))}", "append": "on"}


def test_it_answers_an_empty_log_where_the_guest_printed_nothing(api, alice, running):
    response = api(alice).get(f"/api/v1/instances/{running.pk}/console-log")

    assert response.status_code == 200
    assert response.json() == {"log": "", "size": 0, "max_kib": 64}


def test_it_lets_a_viewer_read_it(api, vera, running):
    assert api(vera).get(f"/api/v1/instances/{running.pk}/console-log?max_kib=1").status_code == 200


@pytest.mark.parametrize("value", ["0", "1025", "x", "²", "-1", ""])
def test_it_refuses_a_size_that_is_not_one(api, alice, running, value):
    response = api(alice).get(f"/api/v1/instances/{running.pk}/console-log", {"max_kib": value})

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["max_kib"]


def test_it_is_not_found_for_another_tenant(charlie, tenant_b, running):
    for client in (client_for(charlie), client_for(token=token_for(charlie, tenant_b))):
        assert client.get(f"/api/v1/instances/{running.pk}/console-log").status_code == 404


def test_it_shows_the_log_panel_on_the_instance_page(client, alice, running):
    client.force_login(alice)

    page = client.get(f"/instances/{running.pk}")
    fragment = client.get(f"/instances/{running.pk}/console-log")

    assert page.status_code == 200
    assert b'id="self-help"' in page.content and f"/instances/{running.pk}/console-log".encode() in page.content
    assert fragment.status_code == 200
    assert b"printed nothing on its serial console yet" in fragment.content


def test_it_asks_for_rescue_from_the_instance_page(client, alice, running):
    client.force_login(alice)

    response = client.post(f"/instances/{running.pk}/self-help/rescue")

    assert response.status_code == 302
    # no rescue image is offered here: the refusal comes back as a message, nothing changed
    assert Instance.objects.get(pk=running.pk).state == "running"
    page = client.get(f"/instances/{running.pk}")
    assert b"no operator has chosen a rescue image" in page.content
