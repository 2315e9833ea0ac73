"""Security groups in the domain: the default group, rules checked field by field, nothing
half-applied, memberships, and the packet filters a host gets from them (compute.firewall)."""

from __future__ import annotations

import pytest

from base.errors import Conflict, Invalid
from compute import firewall, security_groups
from compute import services as compute_services
from compute.drivers.base import PacketRule
from compute.models import Instance, SecurityGroup, SecurityGroupRule
from compute.sizing import Size
from tests.conftest import actor

RuleRequest = security_groups.RuleRequest


def make_instance(who, name, image, flavor, groups=None) -> Instance:
    return compute_services.instance_create(
        actor=who,
        request=compute_services.CreateRequest(
            name=name,
            image_id=str(image.pk),
            size=Size.of_flavor(flavor),
            flavor_id=str(flavor.pk),
            security_group_ids=groups,
        ),
    )


def test_it_gives_a_new_instance_the_tenants_default_group(alice, tenant_a, host, image, flavor):
    # when
    instance = make_instance(actor(alice, tenant_a), "web", image, flavor)

    # then: SSH and ICMP in from anywhere, anything from its own members, everything out
    (group,) = instance.security_groups.all()
    assert group.is_default and group.tenant == tenant_a
    rules = {(r.direction, r.protocol, r.port_min, r.port_max, r.cidr, r.remote_group_id) for r in group.rules.all()}
    assert rules == {
        ("ingress", "tcp", 22, 22, "0.0.0.0/0", None),
        ("ingress", "icmp", None, None, "0.0.0.0/0", None),
        ("ingress", "any", None, None, "", group.pk),
        ("egress", "any", None, None, "0.0.0.0/0", None),
    }
    # one default group per tenant, however often it is asked for
    assert security_groups.default_group(tenant_a) == group
    assert SecurityGroup.objects.filter(tenant=tenant_a).count() == 1


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (RuleRequest("ingress", "gre"), "protocol"),
        (RuleRequest("sideways", "tcp"), "direction"),
        (RuleRequest("ingress", "tcp", port_min=9000, port_max=8000), "port_max"),
        (RuleRequest("ingress", "tcp", port_min=0, port_max=10), "port_min"),
        (RuleRequest("ingress", "tcp", port_min=1, port_max=70000), "port_max"),
        (RuleRequest("ingress", "icmp", port_min=1, port_max=2), "port_min"),
        (RuleRequest("ingress", "tcp", cidr="10.0.0.300/24"), "cidr"),
        (RuleRequest("ingress", "tcp", cidr="not a network"), "cidr"),
        (RuleRequest("ingress", "tcp", cidr="2001:db8::/32"), "cidr"),
        (RuleRequest("ingress", "tcp", remote_group_id="00000000-0000-0000-0000-000000000000"), "remote_group_id"),
        (RuleRequest("ingress", "tcp", remote_group_id="nonsense"), "remote_group_id"),
    ],
    ids=[
        "protocol",
        "direction",
        "inverted-ports",
        "port-zero",
        "port-too-high",
        "icmp-ports",
        "cidr-octet",
        "cidr-words",
        "cidr-ipv6",
        "unknown-group",
        "malformed-group",
    ],
)
def test_it_refuses_a_bad_rule_naming_the_field_and_keeps_nothing(alice, tenant_a, rule, field):
    who = actor(alice, tenant_a)
    group = security_groups.group_create(actor=who, name="web")

    with pytest.raises(Invalid) as refused:
        security_groups.rule_add(actor=who, group=group, request=rule)

    assert refused.value.field == field
    assert not group.rules.exists()
    # and a group made with it is not made at all
    with pytest.raises(Invalid):
        security_groups.group_create(actor=who, name="db", rules=[RuleRequest("ingress", "tcp", port_min=5432), rule])
    assert not SecurityGroup.objects.filter(tenant=tenant_a, name="db").exists()


def test_it_refuses_another_tenants_group_as_a_source_or_a_membership(
    alice, tenant_a, charlie, tenant_b, host, image, flavor
):
    theirs = security_groups.group_create(actor=actor(charlie, tenant_b), name="theirs")
    who = actor(alice, tenant_a)
    ours = security_groups.group_create(actor=who, name="ours")

    with pytest.raises(Invalid) as refused:
        rule = RuleRequest("ingress", "tcp", remote_group_id=theirs.pk)
        security_groups.rule_add(actor=who, group=ours, request=rule)
    assert refused.value.field == "remote_group_id"
    with pytest.raises(Invalid) as refused:
        make_instance(who, "web", image, flavor, groups=(str(theirs.pk),))
    assert refused.value.field == "security_group_ids"
    assert not Instance.objects.filter(tenant=tenant_a).exists()


def test_it_limits_the_rules_of_a_group(alice, tenant_a, settings):
    settings.SECURITY_GROUP_MAX_RULES = 2
    who = actor(alice, tenant_a)
    group = security_groups.group_create(
        actor=who, name="web", rules=[RuleRequest("ingress", "tcp", 80, 80), RuleRequest("ingress", "tcp", 443, 443)]
    )

    with pytest.raises(Invalid) as refused:
        security_groups.rule_add(actor=who, group=group, request=RuleRequest("ingress", "tcp", 8080, 8080))

    assert refused.value.field == "rules"
    assert group.rules.count() == 2


def test_it_refuses_a_duplicate_rule_and_a_taken_name(alice, tenant_a):
    who = actor(alice, tenant_a)
    group = security_groups.group_create(actor=who, name="web", rules=[RuleRequest("ingress", "tcp", 80, 80)])

    with pytest.raises(Conflict):
        security_groups.rule_add(actor=who, group=group, request=RuleRequest("ingress", "tcp", 80, 80))
    with pytest.raises(Invalid) as refused:
        security_groups.group_create(actor=who, name="web")
    assert refused.value.field == "name"


def test_it_keeps_groups_that_are_in_use_or_default(alice, tenant_a, host, image, flavor):
    who = actor(alice, tenant_a)
    web = security_groups.group_create(actor=who, name="web")
    db = security_groups.group_create(actor=who, name="db")
    security_groups.rule_add(actor=who, group=db, request=RuleRequest("ingress", "tcp", 5432, remote_group_id=web.pk))
    instance = make_instance(who, "one", image, flavor, groups=(str(db.pk),))

    # then: the default group, a group with members, and a group other rules name all stay
    with pytest.raises(Conflict):
        security_groups.group_delete(actor=who, group=security_groups.default_group(tenant_a))
    with pytest.raises(Conflict):
        security_groups.group_delete(actor=who, group=db)
    with pytest.raises(Conflict):
        security_groups.group_delete(actor=who, group=web)

    # when: the member leaves and the rule goes, both can go
    security_groups.instance_set_groups(actor=who, instance=instance, group_ids=[])
    security_groups.group_delete(actor=who, group=db)
    security_groups.group_delete(actor=who, group=web)
    assert not SecurityGroup.objects.filter(pk__in=[web.pk, db.pk]).exists()


def test_it_turns_rules_into_packet_filters_for_the_host(alice, tenant_a, host, image, flavor, settings):
    # given: web servers open 80-81 and UDP 53, accept ICMP from 198.51.100.0/24, and the
    # database group takes 5432 from the web group's members
    settings.FIREWALL_PROTECTED_ADDRESSES = ["192.0.2.10"]
    who = actor(alice, tenant_a)
    web = security_groups.group_create(
        actor=who,
        name="web",
        rules=[
            RuleRequest("ingress", "tcp", 80, 81),
            RuleRequest("ingress", "udp", 53, 53, cidr="10.0.0.0/8"),
            RuleRequest("ingress", "icmp", cidr="198.51.100.7/24"),
            RuleRequest("egress", "any"),
        ],
    )
    db = security_groups.group_create(actor=who, name="db")
    security_groups.rule_add(actor=who, group=db, request=RuleRequest("ingress", "tcp", 5432, remote_group_id=web.pk))
    web1 = make_instance(who, "web1", image, flavor, groups=(str(web.pk),))
    web2 = make_instance(who, "web2", image, flavor, groups=(str(web.pk),))
    database = make_instance(who, "db1", image, flavor, groups=(str(db.pk),))

    # when
    filters = {f.name: f for f in firewall.host_filters(host)}

    # then: one filter per group, rule by rule
    web_filter = filters[firewall.group_filter_name(host, web.pk)]
    assert set(web_filter.rules) == {
        PacketRule("accept", "in", "tcp", 0, peer=None, dst_ports=(80, 81)),
        PacketRule("accept", "in", "udp", 0, peer="10.0.0.0/8", dst_ports=(53, 53)),
        PacketRule("accept", "in", "icmp", 0, peer="198.51.100.0/24"),
        PacketRule("accept", "out", "all", 0),
    }
    # a group source is its members' addresses, each on its own
    db_filter = filters[firewall.group_filter_name(host, db.pk)]
    assert {r.peer for r in db_filter.rules} == {f"{web1.ip_address}/32", f"{web2.ip_address}/32"}
    assert all(r.dst_ports == (5432, 5432) for r in db_filter.rules)
    # each instance: anti-spoofing, its groups, DHCP and DNS, never the host, then drop the rest
    mine = filters[firewall.instance_filter_name(database)]
    assert mine.includes == ("clean-traffic", firewall.group_filter_name(host, db.pk))
    gateway = host.ip_pool.gateway
    assert PacketRule("drop", "out", "all", -880, peer=f"{gateway}/32", new_only=True) in mine.rules
    assert PacketRule("drop", "out", "all", -880, peer="192.0.2.10/32", new_only=True) in mine.rules
    assert PacketRule("accept", "out", "udp", -890, peer=f"{gateway}/32", dst_ports=(53, 53)) in mine.rules
    assert mine.rules[-1] == PacketRule("drop", "inout", "all", 1000)

    # when: a web server is deleted, it is no longer trusted
    Instance.objects.filter(pk=web2.pk).update(state="deleting")
    filters = {f.name: f for f in firewall.host_filters(host)}
    db_filter = filters[firewall.group_filter_name(host, db.pk)]
    assert {r.peer for r in db_filter.rules} == {f"{web1.ip_address}/32"}


def test_it_names_instances_dns_safe_and_unique_per_tenant(alice, tenant_a, host, image, flavor):
    who = actor(alice, tenant_a)
    first = make_instance(who, "Web 1", image, flavor)
    second = make_instance(who, "web-1", image, flavor)
    odd = make_instance(who, "数据库", image, flavor)

    assert first.dns_label == "web-1"
    assert second.dns_label == f"web-1-{second.pk.hex[:6]}"
    assert odd.dns_label == "vm"
    assert SecurityGroupRule.objects.exists()  # the default group was made on the way

    # when: the first is renamed, its label follows and frees "web-1"
    renamed = compute_services.instance_rename(actor=who, instance=first, name="Front_End")
    assert renamed.dns_label == "front-end"
