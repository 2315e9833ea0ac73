"""Consolidation, after VMware's DRS/DPM: pack instances onto fewer hosts, within each host's
overcommit ratios, so that whole hosts end up empty and can be powered down.

`plan()` only proposes: which instance moves where, and which hosts end up empty. It works on
a copy of the hosts' claims: the least loaded hosts are tried first, and a host is emptied
only if every instance on it fits on the other hosts in use (best fit: the fullest with room;
an empty host is never woken), a running one only on a host of its own segment (it moves
live, keeping its address). Hosts that take instances are never emptied in the same plan.
An operator approves a plan by sending back its token; `apply()` computes the plan again and
carries it out only if it is still the same, through the same migrations an operator starts
by hand.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from django.core import signing
from django.utils.translation import gettext as _

from base.errors import Conflict, Invalid, Refused
from compute import migration
from compute.models import Host, Instance, InstanceState
from tenants.access import Actor, operator_actor

MOVABLE = (InstanceState.RUNNING, InstanceState.STOPPED)
SALT = "compute.consolidation"


@dataclass(frozen=True)
class Move:
    instance: str
    name: str
    source: str
    target: str
    target_name: str
    live: bool


@dataclass
class Plan:
    moves: list[Move] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)  # host names
    hosts_in_use_before: int = 0
    hosts_in_use_after: int = 0

    def token(self) -> str:
        """What an operator sends back to approve exactly this plan."""
        body = json.dumps([asdict(move) for move in self.moves], sort_keys=True)
        return signing.dumps({"plan": hashlib.sha256(body.encode()).hexdigest()}, salt=SALT)


@dataclass
class _Room:
    host: Host
    vcpus: int
    memory_mb: int
    disk_gb: int

    def fits(self, instance: Instance) -> bool:
        return (
            instance.vcpus <= self.vcpus and instance.memory_mb <= self.memory_mb and instance.disk_gb <= self.disk_gb
        )

    def take(self, instance: Instance, sign: int = 1) -> None:
        self.vcpus -= sign * instance.vcpus
        self.memory_mb -= sign * instance.memory_mb
        self.disk_gb -= sign * instance.disk_gb


def plan() -> Plan:
    hosts = list(Host.objects.filter(status=Host.Status.UP).order_by("name"))
    room = {}
    for host in hosts:
        capacity = host.capacity()
        room[host.pk] = _Room(
            host,
            capacity["vcpus"] - host.vcpus_used,
            capacity["memory_mb"] - host.memory_mb_used,
            capacity["disk_gb"] - host.disk_gb_used,
        )
    live = list(
        Instance.objects.filter(host__in=hosts).exclude(state=InstanceState.DELETED).order_by("-memory_mb", "name")
    )
    on_host: dict = {host.pk: [] for host in hosts}
    for instance in live:
        on_host[instance.host_id].append(instance)
    used = [host for host in hosts if on_host[host.pk]]
    in_use = {host.pk for host in used}  # an empty host is never woken to take instances
    result = Plan(hosts_in_use_before=len(used))
    receiving: set = set()
    emptied: set = set()
    # The least loaded first: the cheapest to empty.
    for host in sorted(used, key=lambda h: (h.memory_mb_used, len(on_host[h.pk]), h.name)):
        if host.pk in receiving or any(i.state not in MOVABLE for i in on_host[host.pk]):
            continue
        tentative: list[tuple[Instance, _Room]] = []
        for instance in on_host[host.pk]:
            live_move = instance.state == InstanceState.RUNNING
            options = [
                r
                for pk, r in room.items()
                if pk != host.pk
                and pk in in_use
                and pk not in emptied
                and r.fits(instance)
                and (not live_move or (host.segment and r.host.segment == host.segment))
            ]
            if not options:
                break
            # Best fit: the host with the least memory left that still takes it.
            target = min(options, key=lambda r: (r.memory_mb, r.host.name))
            target.take(instance)
            tentative.append((instance, target))
        else:
            emptied.add(host.pk)
            for instance, target in tentative:
                receiving.add(target.host.pk)
                result.moves.append(
                    Move(
                        str(instance.pk),
                        instance.name,
                        host.name,
                        str(target.host.pk),
                        target.host.name,
                        instance.state == InstanceState.RUNNING,
                    )
                )
            result.emptied.append(host.name)
            continue
        for instance, target in tentative:  # it did not all fit: give the room back
            target.take(instance, sign=-1)
    result.hosts_in_use_after = result.hosts_in_use_before - len(result.emptied)
    return result


def apply(*, actor: Actor, token: str) -> tuple[Plan, list[dict]]:
    """Carry out the plan the operator approved (its token), if it is still the one `plan()`
    gives; each move's outcome (started, or why not)."""
    try:
        approved = signing.loads(token, salt=SALT)["plan"]
    except (signing.BadSignature, KeyError, TypeError):
        raise Invalid("token", _("This is not a plan's token; ask for the plan again.")) from None
    current = plan()
    if signing.loads(current.token(), salt=SALT)["plan"] != approved:
        raise Conflict(_("The hosts changed since this plan was made; review the new plan."))
    outcomes = []
    for move in current.moves:
        instance = Instance.objects.select_related("tenant").get(pk=move.instance)
        try:
            migration.instance_migrate(
                actor=operator_actor(actor.user, instance.tenant), instance=instance, host_id=move.target
            )
        except Refused as exc:
            outcomes.append({"instance": move.instance, "started": False, "reason": str(exc)})
            continue
        outcomes.append({"instance": move.instance, "started": True, "reason": ""})
    return current, outcomes
