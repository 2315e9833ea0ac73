"""A dead host: fencing, HA restarts on another host, host_down, and the host's return.

compute.upkeep.check_silent_hosts declares a host down only when its worker has been silent
and its hypervisor unreachable for HOST_DOWN_AFTER_SECONDS. Then `evacuate_host`:
1. fences it (HOST_FENCE_COMMAND powers it off), so that no guest of it runs on while a copy of
   it starts elsewhere. Unfenced, nothing is started elsewhere: two guests writing one disk
   would corrupt it, which is worse than waiting.
2. Each HA instance (its disk in the host's shared pool), running or stopped, gets room on
   another host of the segment that mounts the same storage (the scheduler's claim). In one
   transaction its host, claims and address move and it goes to `evacuating`; the state log
   says host_down from now, so its downtime counts for SLA until it runs again. The new host's
   worker then starts it from the same disk (compute.operations.evacuate).
3. Every other instance of the host that was running, stopped or rescued goes to host_down,
   remembering what it was; its tenant is told by the host-outage notice (compute.notices).
   In-flight ones keep their action, which resumes when the host's worker is back.
Beat does this for every down host at each check: an HA instance that found no room waits in
host_down and restarts once a host has room; a fence that failed is tried again.

When the host's worker answers again (compute.tasks.host_heartbeat), `reclaim_host` runs there
before anything else, and again at each heartbeat for as long as `outage_left` finds what the
outage left (the host still marked fenced, or host_down instances on it), so that a worker
killed halfway through leaves the rest to the next one. A domain of an instance that lives
on another host now (or was deleted since) is destroyed and undefined with its DHCP entry, its
volumes left alone (on shared storage they are the other copy's); host_down instances come back
as their guest is, and one that was running and did not survive is started again.
"""

from __future__ import annotations

import logging
import subprocess

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from compute import firewall, history, scheduler, upkeep
from compute.driver_refs import driver, instance_driver
from compute.drivers.base import HostError, TransientHostError
from compute.models import Host, Instance, InstanceAction, InstanceState, IpAllocation, IpPool
from compute.row_locks import lock_host
from compute.sizing import Size
from tenants.services import audit

log = logging.getLogger(__name__)
S = InstanceState
# What an evacuation acts on; in-flight instances wait for their own action to resume.
SETTLED_HERE = (S.RUNNING, S.STOPPED, S.RESCUE)
# What an HA instance is started again from (a rescued one waits for its host, like the others).
RESTARTABLE = (S.RUNNING, S.STOPPED)


def fence(host: Host) -> bool:
    """Power the host off through HOST_FENCE_COMMAND; True only when the command said so."""
    command = settings.HOST_FENCE_COMMAND
    if not command:
        _note(host, "Down, not fenced (no HOST_FENCE_COMMAND): its HA instances wait for it.")
        return False
    # No shell: each word stays one argument whatever the host's name or URI hold.
    argv = [word.replace("{host}", host.name).replace("{uri}", host.uri) for word in command]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=settings.HOST_FENCE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _note(host, f"Down, fencing failed ({exc}): its HA instances wait for it.")
        return False
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        _note(host, f"Down, fencing failed ({why[0][:120]}): its HA instances wait for it.")
        return False
    Host.objects.filter(pk=host.pk).update(fenced_at=timezone.now(), status_detail="Down and fenced.")
    return True


def _note(host: Host, detail: str) -> None:
    log.warning("host %s: %s", host.name, detail)
    Host.objects.filter(pk=host.pk).update(status_detail=detail[:200])


def evacuate_host(host_id) -> dict[str, list[str]]:
    """Act on a host that is down: see the module's description. Beat runs it for every down
    host, so an HA instance that found no room (it waits in host_down) restarts once a host of
    its segment has room, and a fence that failed is tried again; each change is conditional on
    the state it found, so nothing is done twice."""
    report: dict[str, list[str]] = {"restarting": [], "host_down": []}
    host = Host.objects.filter(pk=host_id, status=Host.Status.DOWN).first()
    if host is None:
        return report
    states = [*SETTLED_HERE, S.HOST_DOWN]
    found = list(Instance.objects.filter(host=host, state__in=states).select_related("image").order_by("created_at"))
    ha = [i for i in found if i.shared_disk and _was(i) in RESTARTABLE]
    fenced = bool(ha) and (host.fenced_at is not None or fence(host))
    for instance in found:
        if fenced and instance in ha and (target := _restart_elsewhere(instance, host)):
            report["restarting"].append(f"{instance.pk} -> {target.name}")
        elif instance.state != S.HOST_DOWN and _mark_host_down(instance, host):
            report["host_down"].append(str(instance.pk))
    if any(report.values()):
        audit(None, "host.evacuate", tenant=None, target=host.name, **{k: len(v) for k, v in report.items()})
    return report


def _was(instance: Instance) -> str:
    """What the instance was before its host went down (what it is, if it was not marked yet)."""
    return instance.pending.get("was", "") if instance.state == S.HOST_DOWN else instance.state


def _mark_host_down(instance: Instance, host: Host) -> bool:
    with transaction.atomic():
        changed = Instance.objects.filter(pk=instance.pk, state=instance.state, host=host).update(
            state=S.HOST_DOWN, pending={"was": instance.state}, vnc_port=None
        )
        if changed:
            history.record_state(instance.pk, S.HOST_DOWN, cause="system")
            InstanceAction.objects.create(
                instance=instance,
                action="sync",
                step="host_down",
                status=InstanceAction.Status.DONE,
                detail={"from": instance.state, "to": S.HOST_DOWN, "host": host.name},
            )
    return bool(changed)


def _restart_elsewhere(instance: Instance, dead: Host) -> Host | None:
    """Claim room on a host of the dead one's segment that mounts its shared storage, move the
    instance there (host, claims, address) and queue its start; None when no host has room."""
    from compute import tasks  # tasks imports the modules this one does

    size = Size.of_instance(instance)
    with transaction.atomic():
        try:
            target = scheduler.place(size, instance.image, exclude=[dead.pk], segment=dead.segment, shared=True)
        except scheduler.NoValidHost:
            return None  # the caller marks it host_down: it waits for its host
        for host_id in sorted([dead.pk, target.pk], key=str):
            lock_host(host_id)
        moved = Instance.objects.filter(pk=instance.pk, state=instance.state, host=dead).update(
            state=S.EVACUATING,
            host=target,
            pending={"from_state": S.HOST_DOWN, "was": _was(instance), "source": str(dead.pk)},
            vnc_port=None,
            power_state="unknown",
        )
        if not moved:
            transaction.set_rollback(True)  # it changed since it was read: the claim goes back
            return None
        if instance.state != S.HOST_DOWN:
            # Down from now until it runs on the target (billing.sla), whichever host it is on.
            history.record_state(instance.pk, S.HOST_DOWN, cause="system")
        scheduler.release(dead.pk, size)
        # One segment, one address space: the address moves to the target's pool.
        target_pool = IpPool.objects.get(host=target)
        IpAllocation.objects.filter(pool=target_pool, address=instance.ip_address, instance=None).delete()
        IpAllocation.objects.filter(instance=instance, pool__host=dead).update(pool=target_pool)
        InstanceAction.objects.create(
            instance=instance,
            action="evacuate",
            status=InstanceAction.Status.REQUESTED,
            detail={"from_host": dead.name, "to_host": target.name, "reason": "its host is down and was fenced"},
        )
        instance_id, queue = str(instance.pk), target.queue
        transaction.on_commit(lambda: tasks.evacuate.apply_async(args=[instance_id], queue=queue))
    return target


def _leave_host_down(instance: Instance, to_state: str, power: str, **fields) -> bool:
    fields.setdefault("pending", {})
    return upkeep.settle_observed(instance, to_state, power, cause="system", step="host_back", **fields)


def reclaim_host(host_id) -> dict[str, list[str]]:
    """On a host back from the dead, run by its own worker: see the module's description."""
    from compute import tasks  # tasks imports the modules this one does

    host = Host.objects.get(pk=host_id)
    report: dict[str, list[str]] = {"removed": [], "back": [], "restarting": [], "missing": []}
    present = driver(host).inventory()["domains"]
    elsewhere = Instance.objects.filter(pk__in=present).exclude(host=host)
    for instance in elsewhere:
        # Its disk (on shared storage) is the running copy's now: only the domain goes.
        instance_driver(instance, host).forget(str(instance.pk), instance.mac_address)
        report["removed"].append(str(instance.pk))
    if report["removed"]:
        try:
            firewall.apply_host(host)
        except (HostError, TransientHostError) as exc:
            log.warning("filters of host %s not applied after its return: %s", host.name, exc)
    power = {stats.uuid: stats.power for stats in driver(host).all_stats()}
    for instance in Instance.objects.filter(host=host, state=S.HOST_DOWN).select_related("host"):
        was = instance.pending.get("was", S.STOPPED)
        now = power.get(str(instance.pk), "missing")
        if now == "missing":
            if _leave_host_down(
                instance, S.ERROR, now, error_step="sync", error_message="The domain is missing on its host."
            ):
                report["missing"].append(str(instance.pk))
        elif now == "running" or was != S.RUNNING:
            # It survived (a libvirtd that came back), or was not meant to run.
            back = was if now == "running" or was == S.RESCUE else S.STOPPED
            if back == S.RUNNING:
                status = driver(host).status(str(instance.pk))
                fields = {"vnc_port": status.vnc_port}
            else:
                fields = {"vnc_port": None}
            if _leave_host_down(instance, back, now, **fields):
                report["back"].append(str(instance.pk))
        elif _leave_host_down(instance, S.STARTING, now, pending={"from_state": S.STOPPED}):
            # Meant to run, and did not survive: started again, down for SLA until it runs.
            instance_id, queue = str(instance.pk), host.queue
            transaction.on_commit(lambda i=instance_id, q=queue: tasks.start.apply_async(args=[i], queue=q))
            report["restarting"].append(str(instance.pk))
    # Only now, with the stale copies gone: the next outage fences anew.
    Host.objects.filter(pk=host.pk).update(fenced_at=None)
    return report


def outage_left(host_id) -> bool:
    """Whether an outage of the host left work for `reclaim_host`: it is still marked fenced
    (stale copies may remain), or instances on it are still host_down."""
    left = Q(fenced_at__isnull=False) | Q(instances__state=S.HOST_DOWN)
    return Host.objects.filter(left, pk=host_id).exists()  # one query, on every heartbeat
