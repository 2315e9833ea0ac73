"""Moving an instance to another host, as an operator asks: a stopped one cold, a running
one live (between hosts of one segment, so that its address stays).

The request claims room on the target (the scheduler's conditional UPDATE, or the scheduler's
own choice) and an address of the target's pool (between hosts of one segment, one L2
network, the instance keeps its own), and queues `compute.tasks.migrate`. The
worker (compute.operations.migrate) then, step by step, each idempotent:
export (the disk flattened to one file on the source) -> import (streamed into the target's
pool through libvirt storage streams) -> seed (rebuilt there) -> dhcp (entry and DNS record on
the target's network) -> firewall (the target's filters, this guest's included) -> define ->
switch (one transaction: the instance's host, address and claims move, and it settles back
into stopped) -> cleanup (domain, volumes, DHCP entry, DNS record and filter go from the source).
A running instance moves live instead: prepare (an empty disk of its size on the target, the
seed) -> dhcp -> firewall -> migrate (libvirt's live migration, copying the disks while the
guest runs) -> switch (it settles back into running) -> cleanup. A failure before the switch
gives the target's claim and address back and leaves the instance where it was (running, for a
live one: libvirt keeps the guest on the source when a migration fails), with the failed step
in its action log.
"""

from __future__ import annotations

from django.db import transaction
from django.utils.translation import gettext as _

from base.errors import Conflict, Invalid, Refused
from compute import hosts, scheduler, services, tasks
from compute.models import Host, Instance, IpAllocation, IpPool
from compute.sizing import Size
from compute.transitions import refusal, state_word
from tenants.access import Actor, operator_actor
from tenants.services import audit


def _target(instance: Instance, size: Size, host_id) -> Host:
    """Claim room on the asked-for host, or on the one the scheduler picks (for a running
    instance, a host of its own host's segment)."""
    if host_id is None:
        live = instance.state == Instance.State.RUNNING
        if live and not instance.host.segment:
            raise Conflict(_("A running instance moves only between hosts of one segment; stop it first."))
        try:
            # A disk on shared storage stays there: only hosts of the segment that mount it.
            segment = instance.host.segment if live or instance.shared_disk else None
            return scheduler.place(
                size, instance.image, exclude=[instance.host_id], segment=segment, shared=instance.shared_disk
            )
        except scheduler.NoValidHost:
            raise Conflict(_("No other host has room for this instance.")) from None
    target = Host.objects.filter(pk=host_id).first() if services._is_uuid(host_id) else None
    if target is None:
        raise Invalid("host", _("Unknown host."))
    if target.pk == instance.host_id:
        raise Invalid("host", _("The instance is on this host already."))
    if not scheduler.claim(target.pk, size):
        raise Conflict(_("Host %(name)s is not up or has no room for this instance.") % {"name": target.name})
    return target


def instance_migrate(*, actor: Actor, instance: Instance, host_id=None) -> Instance:
    """Start moving a stopped instance to `host_id` (or a host the scheduler picks)."""
    with transaction.atomic():
        current = Instance.objects.select_related("image", "host").get(pk=instance.pk)
        if reason := refusal("migrate", current.state):
            raise Conflict(reason)
        size = Size.of_instance(current)
        target = _target(current, size, host_id)
        same_segment = bool(current.host.segment) and current.host.segment == target.segment
        if current.shared_disk and not (same_segment and target.shared_pool):
            raise Conflict(
                _("Its disk is on the shared storage of segment %(segment)s; host %(name)s does not mount it.")
                % {"segment": current.host.segment, "name": target.name}
            )
        if current.state == Instance.State.RUNNING and not same_segment:
            raise Conflict(
                _(
                    "A running instance moves only between hosts of one segment, where its address "
                    "stays; stop it for a cold migration to host %(name)s."
                )
                % {"name": target.name}
            )
        if same_segment:
            address = current.ip_address  # one network: the address moves with the instance
        else:
            pool = IpPool.objects.filter(host=target).first()
            address = services._free_address(pool) if pool is not None else None
            if address is None:
                raise Conflict(_("Host %(name)s has no free IP address.") % {"name": target.name})
            IpAllocation.objects.create(pool=pool, address=address, instance=current)
        locked = services._begin(actor, current, "migrate", target=str(target.pk), address=address)
        audit(actor, "instance.migrate", target=str(locked.pk), source=locked.host.name, destination=target.name)
        services._enqueue(tasks.migrate, locked)
    return locked


# What a drain moves; instances in another state are waited for (the drain is asked again).
MOVABLE = (Instance.State.RUNNING, Instance.State.STOPPED)


def host_drain(*, actor: Actor, host: Host) -> dict[str, list[dict]]:
    """Put the host in maintenance (no new instances) and move every instance off it: live
    where it runs, cold where it is stopped, to hosts the scheduler picks. Asked again, it
    moves what is left; what cannot move now (in flight, or nowhere to go) is listed with why."""
    hosts.host_set_status(actor=actor, host=host, status=Host.Status.DISABLED)
    result: dict[str, list[dict]] = {"moving": [], "waiting": []}
    live = Instance.objects.filter(host=host).exclude(state=Instance.State.DELETED).select_related("tenant")
    for instance in live.order_by("created_at"):
        entry = {"id": str(instance.pk), "name": instance.name, "state": instance.state}
        if instance.state not in MOVABLE:
            result["waiting"].append({**entry, "reason": _("It is %(state)s.") % {"state": state_word(instance.state)}})
            continue
        try:
            instance_migrate(actor=operator_actor(actor.user, instance.tenant), instance=instance)
        except Refused as exc:
            result["waiting"].append({**entry, "reason": str(exc)})
            continue
        result["moving"].append(entry)
    audit(actor, "host.drain", tenant=None, target=host.name, moving=len(result["moving"]))
    return result


def undo_claims(instance_id) -> bool:
    """Before the switch: the target's claim and address go back. True when there was a
    migration in flight to undo."""
    with transaction.atomic():
        instance = Instance.objects.select_for_update().filter(pk=instance_id).first()
        if instance is None or instance.state != Instance.State.MIGRATING or "target" not in instance.pending:
            return False
        target = instance.pending["target"]
        scheduler.release(target, Size.of_instance(instance))
        IpAllocation.objects.filter(instance=instance, pool__host_id=target).delete()
        Instance.objects.filter(pk=instance.pk).update(pending={**instance.pending, "target": None})
    return True
