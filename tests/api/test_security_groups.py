"""Security groups through the REST API: 400s naming the field, 409s for illegal changes, the
instance's DNS name and groups, and DNS records on the host's network."""

from __future__ import annotations

from compute.drivers import libvirt_xml as lx
from compute.drivers.libvirt import connect
from compute.models import Instance, SecurityGroup


def create_instance(client, image, flavor, name="web-1", **extra):
    body = {"name": name, "image": str(image.pk), "flavor": str(flavor.pk), **extra}
    return client.post("/api/v1/instances", body, format="json")


def test_it_manages_groups_and_rules(api, alice, tenant_a):
    client = api(alice)

    # given: the list shows the default group without anyone making it
    groups = client.get("/api/v1/security-groups").json()["results"]
    assert [g["name"] for g in groups] == ["default"] and groups[0]["is_default"]

    # when: a group with a rule, then another rule, then one removed
    response = client.post(
        "/api/v1/security-groups",
        {"name": "web", "rules": [{"direction": "ingress", "protocol": "tcp", "port_min": 443, "port_max": 443}]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    group = response.json()
    assert [(r["protocol"], r["port_min"], r["cidr"]) for r in group["rules"]] == [("tcp", 443, "0.0.0.0/0")]
    response = client.post(
        "/api/v1/security-group-rules",
        {"security_group_id": group["id"], "direction": "ingress", "protocol": "udp", "port_min": 53},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["port_min"], response.json()["port_max"]) == (53, 53)
    assert client.delete(f"/api/v1/security-group-rules/{response.json()['id']}").status_code == 204

    # then
    body = client.get(f"/api/v1/security-groups/{group['id']}").json()
    assert [r["port_min"] for r in body["rules"]] == [443]
    renamed = client.patch(f"/api/v1/security-groups/{group['id']}", {"name": "www"}, format="json")
    assert renamed.json()["name"] == "www"
    assert client.delete(f"/api/v1/security-groups/{group['id']}").status_code == 204


def test_it_answers_bad_rules_with_400_naming_the_field(api, alice, tenant_a, charlie, tenant_b):
    client = api(alice)
    group = client.post("/api/v1/security-groups", {"name": "web"}, format="json").json()
    theirs = api(charlie).post("/api/v1/security-groups", {"name": "theirs"}, format="json").json()
    base = {"security_group_id": group["id"], "direction": "ingress"}
    cases = [
        ({"protocol": "gre"}, "protocol"),
        ({"protocol": "tcp", "port_min": 9000, "port_max": 8000}, "port_max"),
        ({"protocol": "tcp", "cidr": "10.1.2.0/33"}, "cidr"),
        ({"protocol": "tcp", "remote_group_id": theirs["id"]}, "remote_group_id"),
        ({"protocol": "icmp", "port_min": 8}, "port_min"),
    ]
    for extra, field in cases:
        response = client.post("/api/v1/security-group-rules", {**base, **extra}, format="json")
        assert response.status_code == 400, (extra, response.json())
        assert field in response.json()["fields"], (extra, response.json())
    # another tenant's group cannot take rules from here
    response = client.post(
        "/api/v1/security-group-rules",
        {**base, "security_group_id": theirs["id"], "protocol": "tcp"},
        format="json",
    )
    assert response.status_code == 400 and "security_group_id" in response.json()["fields"]
    assert client.get(f"/api/v1/security-groups/{group['id']}").json()["rules"] == []


def test_it_refuses_illegal_group_changes_with_409(api, alice, tenant_a, host, image, flavor):
    client = api(alice)
    default = client.get("/api/v1/security-groups").json()["results"][0]
    assert client.delete(f"/api/v1/security-groups/{default['id']}").status_code == 409
    assert client.patch(f"/api/v1/security-groups/{default['id']}", {"name": "x"}, format="json").status_code == 409
    # a group with a member
    assert create_instance(client, image, flavor).status_code == 202
    web = client.post("/api/v1/security-groups", {"name": "web"}, format="json").json()
    instance = Instance.objects.get(tenant=tenant_a)
    response = client.put(
        f"/api/v1/instances/{instance.pk}/security-groups", {"security_group_ids": [web["id"]]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert [g["name"] for g in response.json()["security_groups"]] == ["web"]
    assert client.delete(f"/api/v1/security-groups/{web['id']}").status_code == 409


def test_it_creates_an_instance_in_the_groups_asked_for(api, alice, tenant_a, charlie, tenant_b, host, image, flavor):
    client = api(alice)
    web = client.post("/api/v1/security-groups", {"name": "web"}, format="json").json()
    theirs = api(charlie).post("/api/v1/security-groups", {"name": "theirs"}, format="json").json()

    response = create_instance(client, image, flavor, security_group_ids=[theirs["id"]])
    assert response.status_code == 400 and "security_group_ids" in response.json()["fields"]

    response = create_instance(client, image, flavor, security_group_ids=[web["id"]])
    assert response.status_code == 202, response.json()
    body = client.get(f"/api/v1/instances/{response.json()['id']}").json()
    assert [g["id"] for g in body["security_groups"]] == [web["id"]]
    assert not SecurityGroup.objects.filter(tenant=tenant_a, is_default=True).exists()


def test_it_names_the_instance_in_the_hosts_dns(eager, api, alice, tenant_a, host, image, flavor):
    client = api(alice)

    # when
    response = create_instance(client, image, flavor, name="Web Server")

    # then: the name is returned beside the address, and the host network's DNS answers it
    body = response.json()
    name = f"web-server.{tenant_a.slug}.cloud.internal"
    assert body["dns_name"] == name
    network = connect(host.uri).networkLookupByName(host.network)  # the driver's own simulated host
    assert lx.dns_hosts_of(network.XMLDesc(0))[body["ip_address"]] == [name]

    # when: renamed, the record follows; deleted, it goes
    response = client.patch(f"/api/v1/instances/{body['id']}", {"name": "api"}, format="json")
    assert response.json()["dns_name"] == f"api.{tenant_a.slug}.cloud.internal"
    assert lx.dns_hosts_of(network.XMLDesc(0))[body["ip_address"]] == [f"api.{tenant_a.slug}.cloud.internal"]
    assert client.delete(f"/api/v1/instances/{body['id']}").status_code == 202
    assert body["ip_address"] not in lx.dns_hosts_of(network.XMLDesc(0))
