"""The host side of security groups: the packet filters of a host's guests, from the database.

Every guest interface gets its own filter (`<prefix>i.<instance>`), which includes:
- libvirt's `clean-traffic` with the guest's IP: it may send only from its own MAC and IP and
  answer ARP only for itself (anti-spoofing, at the ebtables level);
- base rules: DHCP, DNS to the host network's own server, and no other connection opened to
  the host (its gateway address, VNC and libvirt ports included) or to the addresses in
  FIREWALL_PROTECTED_ADDRESSES (replies to connections the host opened still pass);
- one filter per security group it is a member of (`<prefix>sg.<group>`), holding that
  group's rules, a rule whose source is a group expanded to its members' addresses;
- a final drop of whatever no rule allowed.

A group's filter is shared by its members on the host: redefining it after a rule change
updates every running guest at once (libvirt re-instantiates a redefined filter live). Filters
are per host (a libvirtd's objects), named with the host's name so that two hosts on one
libvirtd (the test suite's) never touch each other's. Protocol rules become iptables rules on
the bridge port (br_netfilter), not tc: filtering never depends on the shaping path's sfq.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from compute import leases, redis_locks
from compute.driver_refs import driver
from compute.drivers.base import PacketFilter, PacketRule
from compute.models import Host, Instance, InstanceState, IpPool, SecurityGroupRule

log = logging.getLogger(__name__)

# States whose instance is on its host's network, or about to be: a filter is kept for them.
GONE = (InstanceState.DELETED,)
# Members whose address other guests may trust: a deleting instance's address is not one.
NOT_MEMBERS = (InstanceState.DELETED, InstanceState.DELETING)

BASE_PRIORITY = -900
HOST_DROP_PRIORITY = -880
GROUP_PRIORITY = 0
FINAL_DROP_PRIORITY = 1000
ALL_PORTS = (1, 65535)
PROTOCOL = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "any": "all"}


def prefix(host: Host) -> str:
    return f"portal.{host.name}."


def instance_filter_name(instance: Instance) -> str:
    return f"{prefix(instance.host)}i.{instance.pk}"


def group_filter_name(host: Host, group_id) -> str:
    return f"{prefix(host)}sg.{group_id}"


def _host_address(address: str) -> str:
    return f"{address}/32"


def base_rules(gateway: str | None, protected: list[str]) -> list[PacketRule]:
    """What every guest may do whatever its groups say (DHCP and DNS from its host network),
    and what none may (reach the host itself)."""
    rules = [
        # DHCP's broadcasts and replies do not pair up in connection tracking.
        PacketRule("accept", "out", "udp", BASE_PRIORITY, src_ports=(68, 68), dst_ports=(67, 67), stateful=False),
        PacketRule("accept", "in", "udp", BASE_PRIORITY, src_ports=(67, 67), dst_ports=(68, 68), stateful=False),
    ]
    if gateway:
        dns_server = _host_address(gateway)
        for protocol in ("udp", "tcp"):
            rules.append(PacketRule("accept", "out", protocol, BASE_PRIORITY + 10, peer=dns_server, dst_ports=(53, 53)))
    for address in [gateway, *protected]:
        if address:
            # New connections only: replies to the host (SSH from it, say) still pass.
            rule = PacketRule("drop", "out", "all", HOST_DROP_PRIORITY, peer=_host_address(address), new_only=True)
            rules.append(rule)
    return rules


def rule_packets(rule: SecurityGroupRule, members: dict) -> list[PacketRule]:
    """A group rule as packet rules: one per peer (a group source is one per member address)."""
    if rule.remote_group_id:
        peers = [_host_address(ip) for ip in sorted(members.get(rule.remote_group_id, ()))]
    else:
        network = ipaddress.ip_network(rule.cidr or "0.0.0.0/0", strict=False)
        peers = [None if network.prefixlen == 0 else str(network)]
    ports = None
    if rule.protocol in ("tcp", "udp"):
        ports = (rule.port_min, rule.port_max) if rule.port_min is not None else ALL_PORTS
        if ports == ALL_PORTS:
            ports = None
    direction = "in" if rule.direction == SecurityGroupRule.Direction.INGRESS else "out"
    return [
        PacketRule("accept", direction, PROTOCOL[rule.protocol], GROUP_PRIORITY, peer=peer, dst_ports=ports)
        for peer in peers
    ]


def _protected_addresses(host: Host) -> list[str]:
    addresses = list(settings.FIREWALL_PROTECTED_ADDRESSES)
    vnc = ipaddress.ip_address(host.vnc_listen)
    if not (vnc.is_loopback or vnc.is_unspecified):
        addresses.append(str(vnc))
    return addresses


def host_filters(host: Host) -> list[PacketFilter]:
    """Every filter the host's guests need: group filters first (instance filters include
    them), then one per instance on the host."""
    # With the instances migrating here: their filters must exist before they are defined here.
    arriving = Q(state=InstanceState.MIGRATING, pending__target=str(host.pk))
    instances = list(
        Instance.objects.filter(Q(host=host) | arriving)
        .exclude(state__in=GONE)
        .only("id", "ip_address", "host_id", "state")
        .prefetch_related("security_groups")
    )
    if not instances:
        return []
    group_ids = {group.pk for instance in instances for group in instance.security_groups.all()}
    rules = list(SecurityGroupRule.objects.filter(group_id__in=group_ids).order_by("created_at", "id"))
    sources = {rule.remote_group_id for rule in rules if rule.remote_group_id}
    members: dict = defaultdict(set)
    through = Instance.security_groups.through.objects.filter(securitygroup_id__in=sources).exclude(
        instance__state__in=NOT_MEMBERS
    )
    for group_id, address in through.values_list("securitygroup_id", "instance__ip_address"):
        members[group_id].add(address)
    by_group: dict = defaultdict(list)
    for rule in rules:
        by_group[rule.group_id].extend(rule_packets(rule, members))
    filters = [
        PacketFilter(name=group_filter_name(host, group_id), rules=tuple(by_group[group_id]))
        for group_id in sorted(group_ids, key=str)
    ]
    pool = IpPool.objects.filter(host=host).first()
    base = base_rules(pool.gateway if pool else None, _protected_addresses(host))
    final = PacketRule("drop", "inout", "all", FINAL_DROP_PRIORITY)
    for instance in instances:
        instance.host = host
        groups = sorted((group.pk for group in instance.security_groups.all()), key=str)
        filters.append(
            PacketFilter(
                name=instance_filter_name(instance),
                includes=("clean-traffic", *(group_filter_name(host, g) for g in groups)),
                rules=(*base, final),
            )
        )
    return filters


def defined_key(host_id) -> str:
    """The names of the filters the portal has defined on a host. The host's own list is
    never read: libvirt 9.0 can deadlock listing filters while a guest starts (a list holds
    the list's lock and waits for a filter's, which a starting guest holds while it looks the
    list up). A name lost with Redis stays on the host, unused and harmless."""
    return f"{settings.REDIS_PREFIX}:firewall-defined:{host_id}"


def apply_host(host: Host) -> list[str]:
    """Bring the host's filters in line with the database; the names of those it removed.
    Idempotent, and serialized per host, so any number of syncs converge on the last state."""
    drv = driver(host)
    if not drv.can_filter():
        return []
    with redis_locks.held(host.pk, "firewall", wait=60):
        filters = host_filters(host)
        wanted = {f.name for f in filters}
        client = leases.client()
        if wanted:
            client.sadd(defined_key(host.pk), *wanted)  # before: a crash in between leaves no unknown filter
        drv.ensure_filters(filters)
        stale = {name.decode() for name in client.smembers(defined_key(host.pk))} - wanted
        gone = drv.remove_filters(sorted(stale, key=lambda name: ".i." not in name))  # instances' first
        if gone:
            client.srem(defined_key(host.pk), *gone)
        return gone


def remove_host_filters(host: Host) -> list[str]:
    """Every filter the portal defined on the host (a host being taken away, a test's)."""
    client = leases.client()
    names = sorted((n.decode() for n in client.smembers(defined_key(host.pk))), key=lambda n: ".i." not in n)
    gone = driver(host).remove_filters(names)
    if gone:
        client.srem(defined_key(host.pk), *gone)
    return gone


# A queued sync whose worker died no longer holds back the next one after this long.
SYNC_PENDING_SECONDS = 30


def sync_key(host_id) -> str:
    return f"{settings.REDIS_PREFIX}:firewall-sync:{host_id}"


def queue_sync(tenant_id, *, except_host=None) -> None:
    """After commit, have every host with a live instance of the tenant apply its filters
    again: group rules and memberships only ever involve one tenant's instances. A host with a
    sync queued and not started yet gets no second one (the first reads the state it finds).
    Hosts on libvirt's test driver have no filters to apply."""
    from compute import tasks  # tasks imports operations, which use this module

    def send() -> None:
        # Read after commit, not in the caller's transaction: a create holds its tenant's quota
        # row lock there, and this reads every live instance of the tenant.
        live = Instance.objects.filter(tenant_id=tenant_id).exclude(state__in=GONE).exclude(host__domain_type="test")
        if except_host is not None:
            live = live.exclude(host_id=except_host)
        # No ordering: the model's would make DISTINCT one row per instance, not per host.
        for host_id, queue in live.order_by().values_list("host_id", "host__queue").distinct():
            if leases.client().set(sync_key(host_id), "1", nx=True, ex=SYNC_PENDING_SECONDS):
                tasks.sync_firewall.apply_async(args=[str(host_id)], queue=queue)

    transaction.on_commit(send)
