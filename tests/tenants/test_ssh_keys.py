"""SSH public keys: real keys in, with OpenSSH's fingerprint; anything else out. And the quota view."""

import base64
import os
import struct

import pytest
from django.conf import settings

from compute import services as compute_services
from compute.sizing import Size
from tenants.models import Quota, SshKey
from tests.conftest import actor, client_for

# Made with `ssh-keygen -t ... -C ...`; the fingerprints are what `ssh-keygen -lf` printed.
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID2asE5ajASx8ABMIaHDRsNiu5r16SD3l+o4HutglLb7 nina@laptop"
ED25519_FINGERPRINT = "SHA256:9uA04pZI+VirHQh8trrCxjEnPqdA1LLmBRFv0VneXaU"
RSA_2048 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDLS4unuWs6q7+HLsrW8HNH/UNU8hxVlvT6wlgH7pYxTlDvQRTRtvnVwxHiRM3UDT1RgIS"
    "y+GRvsyOCwv30RmEOEiWRiaqJ7X2li/ixk8Gpa+l3obtozsLLMUMSDNTXYjk0De/Vrp8OussejUweOMZyFgKzc3fprY6SfrH7pX/0bMrso4V"
    "4OTl8M7dvGS98j7kn4/gIRhs0qnsc1zO/7Lv8Zb1foZi8jrwA9ASMehRq7gt/8OZ3Tflrb6bu3TlpGDw5tcGiWj5tmumTyOqDlyHKDZ3AK4"
    "sm1Nx8AwXR78Wx9+z92jaZtiGNagpkN4D8Uaou3P/BwFkeSzBHdPqrO1Zl nina@desk"
)
RSA_2048_FINGERPRINT = "SHA256:fKuPdBrkSZj5ia4uYxIejXKo36LFzivTBsF39LZkQxk"
RSA_1024 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC9o4XEDBikzWbvPd6ySxPJ8bJkzA3JLPYKNrCW/wOTe5+WWvXPgXroVQQOQxItLMCDF+R"
    "NbV5SWyBQp3KR4PLQJZvFWjYd+uQi4l9HeuaCHVwxQxFmAaIcwwmzhHio2cvg+JXGhWbitGyzfqFlDGE1+0lYHMSlcDBvoZ6VGy3oww== root@vm"
)


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ed25519_key(point: bytes | None = None, key_type: bytes = b"ssh-ed25519") -> str:
    """An OpenSSH ed25519 public key line built by hand: no ssh-keygen needed."""
    blob = ssh_string(key_type) + ssh_string(os.urandom(32) if point is None else point)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


def add_key(client, public_key: str, name: str = "laptop"):
    return client.post("/api/v1/ssh-keys", {"name": name, "public_key": public_key}, format="json")


@pytest.mark.parametrize(
    ("public_key", "fingerprint"),
    [(ED25519, ED25519_FINGERPRINT), (RSA_2048, RSA_2048_FINGERPRINT)],
    ids=["ed25519", "rsa"],
)
def test_it_accepts_a_real_key_with_its_openssh_fingerprint(alice, tenant_a, public_key, fingerprint):
    response = add_key(client_for(alice), public_key)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["fingerprint"] == fingerprint
    # The comment is user text and is not kept.
    assert body["public_key"] == public_key.rsplit(" ", 1)[0]
    assert SshKey.objects.get(tenant=tenant_a).fingerprint == fingerprint


def test_it_accepts_a_hand_built_ed25519_key(alice, tenant_a):
    response = add_key(client_for(alice), ed25519_key())

    assert response.status_code == 201, response.json()
    assert response.json()["fingerprint"].startswith("SHA256:")


@pytest.mark.parametrize(
    ("public_key", "message"),
    [
        ("", "This field may not be blank."),
        ("hello world", "Unsupported key type"),
        ("ssh-ed25519", "Expected one line"),
        ("ssh-ed25519 not*base64!", "not valid base64"),
        (RSA_1024, "at least 2048 bits"),
        (ed25519_key(point=os.urandom(16)), "must be 32 bytes"),
        (ed25519_key(key_type=b"ssh-rsa"), "does not match its type"),
        ("ssh-rsa " + ED25519.split()[1], "does not match its type"),
        ("ssh-ed25519 " + base64.b64encode(b"\0\0\0\xffssh").decode(), "truncated"),
        (f"{ED25519}\n{RSA_2048}", "Expected one line"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "Unsupported key type"),
    ],
    ids=[
        "empty",
        "garbage",
        "no-data",
        "not-base64",
        "short-rsa",
        "short-ed25519",
        "blob-says-rsa",
        "type-says-rsa",
        "truncated",
        "two-lines",
        "dsa",
    ],
)
def test_it_refuses_what_is_not_a_usable_public_key(alice, tenant_a, public_key, message):
    response = add_key(client_for(alice), public_key)

    assert response.status_code == 400
    body = response.json()
    assert list(body["fields"]) == ["public_key"]
    assert message in body["fields"]["public_key"][0]
    assert not SshKey.objects.exists()


def test_it_refuses_the_same_key_twice_in_a_tenant(alice, tenant_a, charlie, tenant_b):
    client = client_for(alice)
    assert add_key(client, ED25519).status_code == 201

    # when: the same key again, under another name and with another comment
    response = add_key(client, ED25519.replace("nina@laptop", "nina@other"), name="again")

    # then
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert SshKey.objects.filter(tenant=tenant_a).count() == 1
    # ... while another tenant may register it
    assert add_key(client_for(charlie), ED25519).status_code == 201


def test_it_refuses_a_second_key_with_the_same_name(alice, tenant_a):
    client = client_for(alice)
    assert add_key(client, ED25519).status_code == 201

    response = add_key(client, RSA_2048)

    assert response.status_code == 409
    assert SshKey.objects.count() == 1


def test_it_deletes_a_key(alice, tenant_a):
    client = client_for(alice)
    key_id = add_key(client, ED25519).json()["id"]

    assert client.delete(f"/api/v1/ssh-keys/{key_id}").status_code == 204
    assert not SshKey.objects.exists()


def test_it_shows_the_quota_limits_and_nothing_used(alice, tenant_a):
    response = client_for(alice).get("/api/v1/quota")

    assert response.status_code == 200
    assert response.json() == {
        "limits": settings.DEFAULT_QUOTA,
        "usage": {"instances": 0, "vcpus": 0, "memory_mb": 0, "disk_gb": 0},
    }


def test_it_shows_what_the_tenants_instances_use(alice, tenant_a, charlie, tenant_b, host, image, flavor):
    # given: one instance in A, and a raised limit for A
    Quota.objects.filter(tenant=tenant_a).update(vcpus=64)
    compute_services.instance_create(
        actor=actor(alice, tenant_a),
        request=compute_services.CreateRequest(
            name="web-1", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=str(flavor.pk)
        ),
    )

    # when
    body = client_for(alice).get("/api/v1/quota").json()

    # then
    assert body["limits"] == {**settings.DEFAULT_QUOTA, "vcpus": 64}
    assert body["usage"] == {"instances": 1, "vcpus": 1, "memory_mb": 512, "disk_gb": 10}
    assert client_for(charlie).get("/api/v1/quota").json()["usage"]["instances"] == 0
