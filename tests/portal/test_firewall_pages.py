"""The Firewall page (security groups and their rules), the Firewall card of the instance page
(DNS name, attach, detach) and the security groups of the create page."""

from __future__ import annotations

import re

import pytest

from compute import security_groups
from compute.models import Instance, SecurityGroup, SecurityGroupRule
from tenants.models import AuditEvent
from tests.conftest import actor

pytestmark = pytest.mark.django_db


def field_errors(response, field_id: str) -> str:
    """The error text shown under the field whose id is `field_id`, or ""."""
    match = re.search(rf'id="{re.escape(field_id)}-errors">(.*?)</div>', response.content.decode(), re.S)
    return match.group(1) if match else ""


def rule_field(group: SecurityGroup, name: str) -> str:
    return f"id_rule-{group.pk.hex[:12]}-{name}"


def typed_value(response, field_id: str) -> str | None:
    """The value the page puts back into an input."""
    match = re.search(rf'<input[^>]*id="{re.escape(field_id)}"[^>]*>', response.content.decode())
    value = re.search(r'value="([^"]*)"', match.group(0)) if match else None
    return value.group(1) if value else None


def rule(**fields) -> dict:
    return {"direction": "ingress", "protocol": "tcp", "cidr": "", "remote_group": "", "description": "", **fields}


@pytest.fixture
def web(alice, tenant_a):
    return security_groups.group_create(actor=actor(alice, tenant_a), name="web", description="front ends")


# -- the Firewall page ----------------------------------------------------------------------------


def test_it_shows_the_default_group_made_on_first_view_with_its_rules_in_words(client, alice, tenant_a):
    client.force_login(alice)
    assert not SecurityGroup.objects.filter(tenant=tenant_a).exists()

    page = client.get("/tenant/firewall")

    assert page.status_code == 200
    group = SecurityGroup.objects.get(tenant=tenant_a, is_default=True)
    html = page.content.decode()
    assert f'id="group-{group.pk}"' in html and "SSH and ICMP from anywhere" in html
    rows = re.findall(r"<tr data-rule=.*?</tr>", html, re.S)
    words = [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in rows]
    assert words[0].startswith("↓ Inbound TCP 22 from 0.0.0.0/0 (anywhere)")
    assert words[1].startswith("↓ Inbound ICMP — from 0.0.0.0/0 (anywhere)")
    assert words[2].startswith("↓ Inbound Any protocol all ports from instances in default")
    assert words[3].startswith("↑ Outbound Any protocol all ports to 0.0.0.0/0 (anywhere)")
    assert 'data-members="0"' in html


def test_it_creates_a_group_and_adds_a_rule_that_is_then_listed(client, alice, tenant_a):
    client.force_login(alice)

    made = client.post("/tenant/firewall", {"name": "web", "description": "front ends"})

    assert made.status_code == 302
    group = SecurityGroup.objects.get(tenant=tenant_a, name="web")
    assert made.url.endswith(f"#group-{group.pk}")
    added = client.post(
        f"/tenant/firewall/{group.pk}/rules",
        rule(port_min="8000", port_max="8080", cidr="203.0.113.7/24", description="alt http"),
    )
    assert added.status_code == 302
    stored = SecurityGroupRule.objects.get(group=group)
    assert (stored.port_min, stored.port_max, stored.cidr) == (8000, 8080, "203.0.113.0/24")
    html = client.get("/tenant/firewall").content.decode()
    assert "front ends" in html and "8000–8080" in html and "203.0.113.0/24" in html and "alt http" in html
    assert html.index('data-group="default"') < html.index('data-group="web"')  # the default group first
    assert AuditEvent.objects.filter(tenant=tenant_a, action="security_group.rule_add", user=alice).exists()


def test_it_adds_a_rule_whose_source_is_another_group(client, alice, tenant_a, web):
    client.force_login(alice)
    default = security_groups.default_group(tenant_a)

    response = client.post(f"/tenant/firewall/{web.pk}/rules", rule(protocol="any", remote_group=str(default.pk)))

    assert response.status_code == 302
    assert SecurityGroupRule.objects.get(group=web).remote_group == default
    assert "from instances in default" in " ".join(
        re.sub(r"<[^>]+>", " ", client.get("/tenant/firewall").content.decode()).split()
    )


@pytest.mark.parametrize(
    ("typed", "field", "words"),
    [
        ({"port_min": "9000", "port_max": "8000"}, "port_max", "port_max is lower than port_min"),
        ({"port_min": "22", "cidr": "10.0.0.300/8"}, "cidr", "Give an IPv4 network"),
        ({"protocol": "icmp", "port_min": "22"}, "port_min", "Ports apply to tcp and udp rules only"),
        ({"port_min": "70000"}, "port_min", "A port is a whole number from 1 to 65535"),
    ],
)
def test_it_shows_a_bad_rule_next_to_its_field_and_keeps_what_was_typed(client, alice, web, typed, field, words):
    client.force_login(alice)

    response = client.post(f"/tenant/firewall/{web.pk}/rules", rule(description="my note", **typed))

    assert response.status_code == 400
    assert words in field_errors(response, rule_field(web, field))
    for name, value in {**typed, "description": "my note"}.items():
        if name != "protocol":
            assert typed_value(response, rule_field(web, name)) == value, name
    assert "<details" in response.content.decode() and " open>" in response.content.decode()
    assert not SecurityGroupRule.objects.filter(group=web).exists()


def test_it_refuses_a_rule_the_group_has_already_above_the_form(client, alice, web):
    client.force_login(alice)
    client.post(f"/tenant/firewall/{web.pk}/rules", rule(port_min="443"))

    again = client.post(f"/tenant/firewall/{web.pk}/rules", rule(port_min="443"))

    assert again.status_code == 409 and "This group has this rule already." in again.content.decode()
    assert SecurityGroupRule.objects.filter(group=web).count() == 1


def test_it_refuses_a_group_name_the_tenant_uses_next_to_the_name(client, alice, web):
    client.force_login(alice)

    response = client.post("/tenant/firewall", {"name": "web", "description": "typed text"})

    assert response.status_code == 400
    assert "already exists" in field_errors(response, "id_name")
    assert typed_value(response, "id_description") == "typed text"


def test_it_renames_a_group_and_keeps_the_default_groups_name(client, alice, tenant_a, web):
    client.force_login(alice)
    default = security_groups.default_group(tenant_a)

    assert client.post(f"/tenant/firewall/{web.pk}/edit", {"name": "www", "description": "new"}).status_code == 302
    kept = client.post(f"/tenant/firewall/{default.pk}/edit", {"name": "renamed", "description": "mine"})

    web.refresh_from_db()
    default.refresh_from_db()
    assert (web.name, web.description) == ("www", "new")
    assert kept.status_code == 302 and (default.name, default.description) == ("default", "mine")


def test_it_asks_before_deleting_a_group_and_refuses_while_an_instance_is_in_it(
    client, alice, tenant_a, web, make_instance
):
    client.force_login(alice)
    instance = make_instance("web-1")
    security_groups.instance_attach(actor=actor(alice, tenant_a), instance=instance, group_id=str(web.pk))

    question = client.get(f"/tenant/firewall/{web.pk}/delete")
    refused = client.post(f"/tenant/firewall/{web.pk}/delete", follow=True)

    assert question.status_code == 200 and "confirm-group-delete" in question.content.decode()
    assert "1 instance is still in it" in question.content.decode()
    assert "still has 1 instance(s)" in refused.content.decode()
    assert SecurityGroup.objects.filter(pk=web.pk).exists()

    security_groups.instance_detach(actor=actor(alice, tenant_a), instance=instance, group_id=str(web.pk))
    assert client.post(f"/tenant/firewall/{web.pk}/delete").status_code == 302
    assert not SecurityGroup.objects.filter(pk=web.pk).exists()


def test_it_offers_no_delete_of_the_default_group(client, alice, tenant_a):
    client.force_login(alice)
    default = security_groups.default_group(tenant_a)

    assert f"/tenant/firewall/{default.pk}/delete" not in client.get("/tenant/firewall").content.decode()
    refused = client.post(f"/tenant/firewall/{default.pk}/delete", follow=True)

    assert "The default group cannot be deleted." in refused.content.decode()
    assert SecurityGroup.objects.filter(pk=default.pk).exists()


def test_it_removes_a_rule(client, alice, tenant_a, web):
    client.force_login(alice)
    client.post(f"/tenant/firewall/{web.pk}/rules", rule(port_min="443"))
    stored = SecurityGroupRule.objects.get(group=web)

    response = client.post(f"/tenant/firewall/rules/{stored.pk}/delete")

    assert response.status_code == 302 and response.url.endswith(f"#group-{web.pk}")
    assert not SecurityGroupRule.objects.filter(pk=stored.pk).exists()
    assert AuditEvent.objects.filter(tenant=tenant_a, action="security_group.rule_delete").exists()


def test_it_lets_a_viewer_look_but_not_change(client, vera, web):
    client.force_login(vera)
    rule_id = SecurityGroupRule.objects.create(
        group=web, direction="ingress", protocol="tcp", port_min=80, port_max=80
    ).pk

    page = client.get("/tenant/firewall").content.decode()

    assert "web" in page and "new-group-form" not in page and "/rules" not in page and "Remove" not in page
    assert client.post("/tenant/firewall", {"name": "mine"}).status_code == 403
    assert client.post(f"/tenant/firewall/{web.pk}/rules", rule(port_min="22")).status_code == 403
    assert client.post(f"/tenant/firewall/{web.pk}/edit", {"name": "x"}).status_code == 403
    assert client.post(f"/tenant/firewall/{web.pk}/delete").status_code == 403
    assert client.post(f"/tenant/firewall/rules/{rule_id}/delete").status_code == 403
    assert (
        SecurityGroupRule.objects.filter(group=web).count() == 1 and SecurityGroup.objects.filter(name="web").exists()
    )


def test_it_keeps_another_tenants_groups_and_rules_out_of_reach(client, alice, tenant_a, charlie, tenant_b):
    theirs = security_groups.group_create(actor=actor(charlie, tenant_b), name="charlies")
    their_rule = security_groups.rule_add(
        actor=actor(charlie, tenant_b), group=theirs, request=security_groups.RuleRequest("ingress", "tcp", 22, 22)
    )
    client.force_login(alice)

    page = client.get("/tenant/firewall")
    assert page.status_code == 200 and "charlies" not in page.content.decode()
    assert client.get(f"/tenant/firewall/{theirs.pk}/edit").status_code == 404
    assert client.post(f"/tenant/firewall/{theirs.pk}/delete").status_code == 404
    assert client.post(f"/tenant/firewall/{theirs.pk}/rules", rule(port_min="80")).status_code == 404
    assert client.post(f"/tenant/firewall/rules/{their_rule.pk}/delete").status_code == 404
    mine = security_groups.default_group(tenant_a)
    as_source = client.post(f"/tenant/firewall/{mine.pk}/rules", rule(remote_group=str(theirs.pk)))
    assert as_source.status_code == 400
    assert (
        SecurityGroupRule.objects.filter(group=theirs).count() == 1
        and SecurityGroup.objects.filter(pk=theirs.pk).exists()
    )


# -- the instance page ------------------------------------------------------------------------------


def test_it_shows_the_instances_dns_name_and_groups_and_attaches_and_detaches(
    client, alice, tenant_a, web, make_instance, settings
):
    settings.PORTAL_DNS_ZONE = "cloud.example"
    client.force_login(alice)
    instance = make_instance("Web 1")
    name = f"web-1.{tenant_a.slug}.cloud.example"

    page = client.get(f"/instances/{instance.pk}").content.decode()

    assert f'id="instance-dns-name">{name}<' in page and f'id="firewall-dns-name">{name}<' in page
    groups = page.split('id="instance-groups"')[1].split("</ul>")[0]
    assert 'data-group="default"' in groups and 'data-group="web"' not in groups
    assert f'<option value="{web.pk}">web</option>' in page

    attached = client.post(f"/instances/{instance.pk}/security-groups/attach", {"security_group": str(web.pk)})
    assert attached.status_code == 302 and attached.url.endswith("#firewall")
    assert set(instance.security_groups.values_list("name", flat=True)) == {"default", "web"}
    groups = client.get(f"/instances/{instance.pk}").content.decode().split('id="instance-groups"')[1]
    assert 'data-group="web"' in groups.split("</ul>")[0]

    default = security_groups.default_group(tenant_a)
    detached = client.post(f"/instances/{instance.pk}/security-groups/{default.pk}/detach", follow=True)
    assert list(instance.security_groups.values_list("name", flat=True)) == ["web"]
    assert "left the security group default" in detached.content.decode()
    assert AuditEvent.objects.filter(tenant=tenant_a, action="instance.detach_security_group").exists()


def test_it_says_why_an_attach_is_refused(client, alice, tenant_a, charlie, tenant_b, make_instance):
    client.force_login(alice)
    instance = make_instance("web-1")
    theirs = security_groups.group_create(actor=actor(charlie, tenant_b), name="charlies")

    response = client.post(
        f"/instances/{instance.pk}/security-groups/attach", {"security_group": str(theirs.pk)}, follow=True
    )

    assert "Unknown security group." in response.content.decode()
    assert list(instance.security_groups.values_list("name", flat=True)) == ["default"]


def test_it_shows_a_viewer_the_groups_without_the_forms(client, vera, make_instance):
    instance = make_instance("web-1")
    client.force_login(vera)

    page = client.get(f"/instances/{instance.pk}").content.decode()

    assert 'data-group="default"' in page and "attach-group-form" not in page and "/detach" not in page
    assert client.post(f"/instances/{instance.pk}/security-groups/attach", {"security_group": ""}).status_code == 403


def test_it_shows_the_dns_name_beside_the_address_on_the_dashboard(client, alice, tenant_a, make_instance):
    client.force_login(alice)
    instance = make_instance("db-1")

    html = client.get("/instances/").content.decode()

    assert f"data-dns-name>db-1.{tenant_a.slug}." in html and instance.ip_address in html


# -- the create page --------------------------------------------------------------------------------


def create_form(image, flavor, **fields) -> dict:
    return {"name": "web-1", "image": str(image.pk), "size_mode": "flavor", "flavor": str(flavor.pk), **fields}


def test_it_offers_the_groups_on_the_create_page_with_the_default_one_ticked(client, alice, tenant_a, web, host):
    client.force_login(alice)

    html = client.get("/instances/new").content.decode()

    default = SecurityGroup.objects.get(tenant=tenant_a, is_default=True)
    boxes = dict(re.findall(r'<input[^>]*name="security_groups"[^>]*value="([^"]+)"([^>]*)>', html))
    assert set(boxes) == {str(default.pk), str(web.pk)}
    assert "checked" in boxes[str(default.pk)] and "checked" not in boxes[str(web.pk)]


def test_it_creates_an_instance_in_the_groups_chosen(client, alice, tenant_a, web, host, image, flavor):
    client.force_login(alice)
    default = security_groups.default_group(tenant_a)

    chosen = client.post("/instances/new", create_form(image, flavor, security_groups=[str(web.pk), str(default.pk)]))
    only_web = client.post("/instances/new", create_form(image, flavor, name="web-2", security_groups=[str(web.pk)]))
    none = client.post("/instances/new", create_form(image, flavor, name="web-3"))

    assert chosen.status_code == only_web.status_code == none.status_code == 302
    groups = {i.name: set(i.security_groups.values_list("name", flat=True)) for i in Instance.objects.all()}
    assert groups == {"web-1": {"default", "web"}, "web-2": {"web"}, "web-3": {"default"}}


def test_it_refuses_another_tenants_group_on_the_create_page_and_keeps_the_form(
    client, alice, tenant_a, charlie, tenant_b, host, image, flavor
):
    client.force_login(alice)
    theirs = security_groups.group_create(actor=actor(charlie, tenant_b), name="charlies")

    response = client.post("/instances/new", create_form(image, flavor, security_groups=[str(theirs.pk)]))

    assert response.status_code == 400 and field_errors(response, "id_security_groups")
    assert typed_value(response, "id_name") == "web-1"
    assert not Instance.objects.exists()
