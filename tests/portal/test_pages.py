"""Server-rendered pages that the API tests do not reach: invitation link, tenant switch, console page."""

from compute import operations, services
from compute.sizing import Size
from tenants import services as tenant_services
from tenants.models import Membership
from tests.conftest import actor


def test_it_accepts_an_invitation_from_the_e_mailed_link_only_on_post(client, alice, tenant_a, charlie, tenant_b):
    invitation, token = tenant_services.invitation_create(
        actor=actor(alice, tenant_a), email=charlie.email, role="member"
    )
    client.force_login(charlie)

    page = client.get(f"/invitations/accept/{token}")
    assert page.status_code == 200 and b"Accept invitation" in page.content
    assert not Membership.objects.filter(user=charlie, tenant=tenant_a).exists()

    response = client.post(f"/invitations/accept/{token}")

    assert response.status_code == 302
    assert Membership.objects.get(user=charlie, tenant=tenant_a).role == "member"
    assert client.get("/api/v1/tenant").json()["id"] == str(tenant_a.pk)
    assert client.post(f"/invitations/accept/{token}").status_code == 400  # single use


def test_it_switches_only_to_tenants_the_user_belongs_to(client, alice, tenant_a, tenant_b):
    client.force_login(alice)
    personal = client.get("/api/v1/tenant").json()["id"]
    assert personal == str(tenant_a.pk)

    client.post("/tenants/switch", {"tenant": str(tenant_b.pk)})
    assert client.get("/api/v1/tenant").json()["id"] == str(tenant_a.pk)

    other = tenant_services.tenant_create(name="Second", owner=alice)
    client.post("/tenants/switch", {"tenant": str(other.pk), "next": "https://evil.test/"})
    assert client.get("/api/v1/tenant").json()["id"] == str(other.pk)


def test_it_serves_the_console_page_only_inside_the_tenant(
    client, alice, charlie, tenant_a, tenant_b, host, image, flavor
):
    request = services.CreateRequest(name="vm", image_id=str(image.pk), size=Size.of_flavor(flavor), flavor_id=None)
    instance = services.instance_create(actor=actor(alice, tenant_a), request=request)
    operations.provision(instance.pk)
    instance.__class__.objects.filter(pk=instance.pk).update(vnc_port=5901)

    client.force_login(charlie)
    assert client.get(f"/instances/{instance.pk}/console").status_code == 404

    client.force_login(alice)
    page = client.get(f"/instances/{instance.pk}/console")
    assert page.status_code == 200
    assert b'data-websocket-url="ws://' in page.content and b"?token=" in page.content

    instance.__class__.objects.filter(pk=instance.pk).update(state="stopped", vnc_port=None)
    assert client.get(f"/instances/{instance.pk}/console").status_code == 409
