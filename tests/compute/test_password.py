"""Passwords: at create only a SHA-512 crypt hash reaches the seed and is kept until the build used
it; a reset goes through the guest agent as a hash, and a guest with no agent is a plain 409."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import libvirt
import pytest
from passlib.hash import sha512_crypt

from compute import operations
from compute.drivers.libvirt import LibvirtDriver, connect
from compute.drivers.libvirt_xml import GUEST_AGENT_CHANNEL
from compute.models import IdempotencyKey, Instance, InstanceAction
from tenants.models import AuditEvent
from tests.compute.hypervisor import libvirt_error
from tests.seeds import read_seed

PASSWORD = "correct horse battery"


def create(client, image, flavor, **extra):
    body = {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk), **extra}
    return client.post("/api/v1/instances", body, format="json")


def vendor_data(instance: Instance) -> dict:
    text = read_seed(operations._seed(instance))["vendor-data"].decode()
    assert text.startswith("#cloud-config\n")
    return json.loads(text.removeprefix("#cloud-config\n"))


def everything_stored_about(instance_id) -> str:
    """Every row the create wrote that could hold the password, as text."""
    rows = [
        Instance.objects.filter(pk=instance_id).values().get(),
        *InstanceAction.objects.filter(instance_id=instance_id).values(),
        *IdempotencyKey.objects.values(),
        *AuditEvent.objects.values(),
    ]
    return json.dumps(rows, default=str)


def test_it_puts_only_the_hash_of_the_password_in_the_seed(api, alice, tenant_a, host, image, flavor):
    # given: created with the customer's password, the build not run yet
    response = create(api(alice), image, flavor, password=PASSWORD)
    assert response.status_code == 202, response.json()
    assert "password" not in response.json() or response.json()["password"] is None
    instance = Instance.objects.get(pk=response.json()["id"])

    # then: the seed gives the default user the hash, unexpired, with SSH password login on
    data = vendor_data(instance)
    assert data["password"].startswith("$6$rounds=")
    assert sha512_crypt.verify(PASSWORD, data["password"])
    assert data["chpasswd"] == {"expire": False}
    assert data["ssh_pwauth"] is True
    assert data["manage_etc_hosts"] == "localhost"
    assert PASSWORD not in everything_stored_about(instance.pk)

    # when: the build has written the seed
    assert operations.provision(str(instance.pk)) == "running"

    # then: not even the hash is kept
    assert Instance.objects.get(pk=instance.pk).password_hash == ""


def test_it_generates_a_password_and_shows_it_once(api, alice, tenant_a, host, image, flavor):
    client = api(alice)

    response = client.post(
        "/api/v1/instances",
        {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk), "generate_password": True},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-1",
    )

    assert response.status_code == 202, response.json()
    password = response.json()["password"]
    assert len(password) == 16
    instance = Instance.objects.get(pk=response.json()["id"])
    assert sha512_crypt.verify(password, instance.password_hash)
    assert sha512_crypt.verify(password, vendor_data(instance)["password"])
    assert password not in everything_stored_about(instance.pk)
    assert "password" not in client.get(f"/api/v1/instances/{instance.pk}").json()
    # the same request again gives the same instance, and not the password again
    again = client.post(
        "/api/v1/instances",
        {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk), "generate_password": True},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-1",
    )
    assert again.status_code == 202
    assert again.json()["id"] == str(instance.pk) and again.json()["password"] is None


def test_it_has_no_password_in_the_seed_unless_asked(api, alice, tenant_a, host, image, flavor):
    instance = Instance.objects.get(pk=create(api(alice), image, flavor).json()["id"])

    assert instance.password_hash == ""
    assert vendor_data(instance) == {"manage_etc_hosts": "localhost"}


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"password": "short"}, "password", "Ensure this field has at least 8 characters."),
        (
            {"password": PASSWORD, "generate_password": True},
            "password",
            "Give a password, or ask for one to be generated, not both.",
        ),
        ({"password": "tab\there!"}, "password", "A password has printable characters only."),
    ],
)
def test_it_refuses_bad_passwords(api, alice, tenant_a, host, image, flavor, extra, field, message):
    response = create(api(alice), image, flavor, **extra)

    assert response.status_code == 400
    assert response.json()["fields"] == {field: [message]}
    assert not Instance.objects.exists()


# -- reset through the guest agent ------------------------------------------------------------


class NoAgentDriver(LibvirtDriver):
    """The real driver, whose domains' guest agent never answers (as in a guest without one)."""

    def _domain(self, uuid):
        dom = super()._domain(uuid)
        if dom is None:
            return None

        class Silent:
            def __getattr__(self, name):
                return getattr(dom, name)

            def setUserPassword(self, *_args):  # noqa: N802 - libvirt's name
                message = "Guest agent is not responding: QEMU guest agent is not connected"
                raise libvirt_error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, message)

        return Silent()


@pytest.fixture
def running(eager, api, alice, tenant_a, host, image, flavor) -> Instance:
    return Instance.objects.get(pk=create(api(alice), image, flavor).json()["id"])


def test_it_gives_every_domain_a_guest_agent_channel(running):
    dom = connect(running.host.uri).lookupByUUIDString(str(running.pk))
    root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314 - libvirt's own output

    channel = root.find(f"./devices/channel/target[@name='{GUEST_AGENT_CHANNEL}']")

    assert channel is not None and channel.get("type") == "virtio"


def test_it_resets_a_password_through_the_guest_agent(api, alice, running):
    response = api(alice).post(f"/api/v1/instances/{running.pk}/reset-password", {"username": "debian"}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["username"] == "debian" and len(body["password"]) == 16
    step = InstanceAction.objects.get(instance=running, action="reset_password")
    assert (step.step, step.status, step.detail) == ("agent", "done", {"username": "debian"})
    assert body["password"] not in everything_stored_about(running.pk)
    assert AuditEvent.objects.filter(action="instance.reset_password", target=str(running.pk)).exists()


def test_it_sets_the_customers_own_password(api, alice, running):
    response = api(alice).post(f"/api/v1/instances/{running.pk}/reset-password", {"password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert response.json() == {"username": "root", "password": None}


def test_it_says_plainly_when_the_guest_has_no_agent(api, alice, running, use_driver):
    use_driver(NoAgentDriver)

    response = api(alice).post(f"/api/v1/instances/{running.pk}/reset-password", {}, format="json")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith("Password reset is unavailable for this instance: no guest agent answers in it")
    assert "qemu-guest-agent" in detail and "rescue mode" in detail
    step = InstanceAction.objects.get(instance=running, action="reset_password")
    assert step.status == "failed" and "not connected" in step.error
    assert Instance.objects.get(pk=running.pk).state == "running"


def test_it_resets_only_a_running_instance(api, alice, running):
    assert api(alice).post(f"/api/v1/instances/{running.pk}/stop").status_code == 202

    response = api(alice).post(f"/api/v1/instances/{running.pk}/reset-password", {}, format="json")

    assert response.status_code == 409
    assert response.json()["detail"] == "A password can be reset only while the instance runs; it is stopped."
    assert not InstanceAction.objects.filter(action="reset_password").exists()


def test_it_refuses_a_user_name_that_is_not_one(api, alice, running):
    response = api(alice).post(
        f"/api/v1/instances/{running.pk}/reset-password", {"username": "root;reboot"}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["username"]
