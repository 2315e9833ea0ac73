"""The tenant's images page: its snapshots listed, renamed and deleted; public images listed;
another tenant's snapshots out of reach; snapshot names unique per tenant (pages and API)."""

import pytest

from compute.models import Image
from tenants.models import AuditEvent


def snapshot(tenant, name: str, **fields) -> Image:
    return Image.objects.create(
        name=name, tenant=tenant, visibility=Image.Visibility.PRIVATE, size_bytes=1024, source_path="", **fields
    )


@pytest.fixture
def mine(tenant_a):
    return snapshot(tenant_a, "before-upgrade")


@pytest.fixture
def theirs(tenant_b):
    return snapshot(tenant_b, "charlies-secret")


def test_it_lists_the_tenants_own_snapshots_and_the_public_images(client, alice, mine, theirs, image):
    client.force_login(alice)
    page = client.get("/tenant/images")
    assert page.status_code == 200
    assert b"before-upgrade" in page.content and image.name.encode() in page.content
    assert b"charlies-secret" not in page.content


def test_it_renames_a_snapshot_and_refuses_a_name_the_tenant_already_uses(client, alice, tenant_a, mine):
    client.force_login(alice)
    snapshot(tenant_a, "taken")

    refused = client.post(f"/tenant/images/{mine.pk}/rename", {"name": "taken"})
    assert refused.status_code == 400 and "already has an image or snapshot with this name" in refused.text
    assert Image.objects.get(pk=mine.pk).name == "before-upgrade"

    response = client.post(f"/tenant/images/{mine.pk}/rename", {"name": "  after-upgrade "})
    assert response.status_code == 302
    assert Image.objects.get(pk=mine.pk).name == "after-upgrade"
    assert AuditEvent.objects.filter(tenant=tenant_a, action="image.rename", user=alice).exists()


def test_it_asks_before_deleting_and_then_retires_the_snapshot(client, alice, mine):
    client.force_login(alice)
    question = client.get(f"/tenant/images/{mine.pk}/delete")
    assert question.status_code == 200 and b"confirm-image-delete" in question.content
    assert Image.objects.get(pk=mine.pk).state != Image.State.DELETED

    assert client.post(f"/tenant/images/{mine.pk}/delete").status_code == 302
    assert Image.objects.get(pk=mine.pk).state == Image.State.DELETED
    assert b"<strong>before-upgrade</strong>" not in client.get("/tenant/images").content  # (the notice names it)


def test_it_keeps_other_tenants_and_public_images_out_of_reach(client, alice, theirs, image):
    client.force_login(alice)
    for target in (theirs, image):
        assert client.get(f"/tenant/images/{target.pk}/rename").status_code == 404
        assert client.post(f"/tenant/images/{target.pk}/delete").status_code == 404
    assert Image.objects.get(pk=theirs.pk).state != Image.State.DELETED


def test_it_lets_a_viewer_look_but_not_change(client, vera, mine):
    client.force_login(vera)
    assert b"before-upgrade" in client.get("/tenant/images").content
    assert client.post(f"/tenant/images/{mine.pk}/rename", {"name": "x"}).status_code == 403
    assert client.post(f"/tenant/images/{mine.pk}/delete").status_code == 403
    assert Image.objects.get(pk=mine.pk).name == "before-upgrade"


def test_it_refuses_a_second_snapshot_of_the_same_name_through_the_api(
    eager, api, alice, tenant_a, host, image, flavor
):
    client = api(alice)
    created = client.post(
        "/api/v1/instances", {"name": "web-1", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    ).json()
    first = client.post(f"/api/v1/instances/{created['id']}/snapshot", {"name": "nightly"}, format="json")
    assert first.status_code == 202, first.json()

    second = client.post(f"/api/v1/instances/{created['id']}/snapshot", {"name": "nightly"}, format="json")

    assert second.status_code == 400
    assert second.json()["fields"] == {"name": ["Your tenant already has an image or snapshot with this name."]}
    assert Image.objects.filter(tenant=tenant_a, name="nightly").count() == 1
