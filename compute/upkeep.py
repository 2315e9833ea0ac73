"""Host upkeep, run by beat and by each host's worker: heartbeats, silent hosts, the power-state
reconciler that catches guests changing by themselves, stalled work, and orphans."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compute import history, leases
from compute.driver_refs import driver
from compute.drivers.base import COMPLETE_SUFFIX, HostError, TransientHostError
from compute.models import Host, Image, Instance, InstanceAction, InstanceState
from compute.transitions import ACTION_OF_IN_FLIGHT, IN_FLIGHT

log = logging.getLogger(__name__)
S = InstanceState


def heartbeat(host_id) -> dict:
    host = Host.objects.get(pk=host_id)
    info = driver(host).host_info()
    now = timezone.now()
    fields = {
        "vcpus_total": info.vcpus,
        "memory_mb_total": info.memory_mb,
        "disk_gb_total": info.disk_gb,
        "last_heartbeat": now,
        "heartbeat_asked_at": None,
        "hypervisor_seen_at": now,
        "status_detail": "",
    }
    Host.objects.filter(pk=host.pk).update(**fields)
    returned = bool(history.set_host_status([host.pk], Host.Status.UP, only_from=[Host.Status.DOWN]))
    return {"vcpus": info.vcpus, "memory_mb": info.memory_mb, "disk_gb": info.disk_gb, "returned": returned}


def check_silent_hosts() -> dict:
    """Hosts whose worker has not answered a heartbeat asked of it HOST_DOWN_AFTER_SECONDS
    ago. A silent worker is not a dead host: the hypervisor is asked directly, and only a host
    whose hypervisor has not answered for as long either goes down (its guests' downtime counts
    for SLA, and compute.evacuation acts on them).
    One whose hypervisor answers stays up, takes no new instances (the scheduler skips hosts
    with an unanswered request that old), and says why in its status detail.

    Silence is counted from the first unanswered request, not from the last heartbeat, so a
    beat that was stopped for a while asks again before it judges anyone."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.HOST_DOWN_AFTER_SECONDS)
    silent = Host.objects.filter(status=Host.Status.UP, heartbeat_asked_at__lt=cutoff)
    down, worker_silent = [], []
    for host in silent:
        if probe_hypervisor(host):
            Host.objects.filter(pk=host.pk).update(
                hypervisor_seen_at=now, status_detail="The host's worker is not answering; its hypervisor is."
            )
            worker_silent.append(host.name)
            continue
        if host.hypervisor_seen_at and host.hypervisor_seen_at > cutoff:
            continue  # reached less than HOST_DOWN_AFTER ago: not dead long enough to say so
        Host.objects.filter(pk=host.pk).update(status_detail="Neither the host's worker nor its hypervisor answers.")
        if history.set_host_status([host.pk], Host.Status.DOWN, only_from=[Host.Status.UP]):
            down.append(host.name)
    return {"marked_down": down, "worker_silent": worker_silent}


def ask_for_heartbeats(statuses) -> None:
    """Note when a host was first asked for a heartbeat it has not answered yet."""
    Host.objects.filter(status__in=statuses, heartbeat_asked_at__isnull=True).update(heartbeat_asked_at=timezone.now())


def probe_hypervisor(host: Host, timeout: float | None = None) -> bool:
    """Whether the host's libvirt answers, asked from here (not from its own worker), within
    `timeout`: a connection to an unreachable host can hang for minutes."""
    timeout = timeout or settings.HYPERVISOR_PROBE_SECONDS
    answer: list[bool] = []

    def ask() -> None:
        try:
            driver(host).host_info()
            answer.append(True)
        except (HostError, TransientHostError):
            answer.append(False)

    thread = threading.Thread(target=ask, daemon=True, name=f"probe {host.name}")
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def stalled_instances() -> list[tuple[str, str, str]]:
    """(instance id, state, host queue) of in-flight instances that no task has held for
    REAP_AFTER_SECONDS: their worker died (or their message was lost), and their work is due
    again. The first sighting without a lease is remembered; only a lease that stays away
    that long counts, so a task still waiting in its queue is not queued twice at once."""
    rows = list(
        Instance.objects.filter(state__in=IN_FLIGHT, host__status__in=[Host.Status.UP, Host.Status.DISABLED])
        .values_list("id", "state", "host__queue")
        .order_by("created_at")[: settings.REAP_BATCH]
    )
    if not rows:
        return []
    client = leases.client()
    held = leases.holders([leases.instance_key(row[0]) for row in rows])
    now = time.time()
    due = []
    for (instance_id, state, queue), is_held in zip(rows, held, strict=True):
        seen_key = f"{settings.REDIS_PREFIX}:instance-unheld:{instance_id}:{state}"
        if is_held:
            client.delete(seen_key)
            continue
        first = client.get(seen_key)
        if first is None:
            client.set(seen_key, now, ex=24 * 3600)
            continue
        if now - float(first) < settings.REAP_AFTER_SECONDS:
            continue
        client.set(seen_key, now, ex=24 * 3600)  # next look after another REAP_AFTER_SECONDS
        InstanceAction.objects.create(
            instance_id=instance_id,
            action=ACTION_OF_IN_FLIGHT[state],
            step="resume",
            status=InstanceAction.Status.DONE,
            detail={"reason": f"no worker held it for {settings.REAP_AFTER_SECONDS} s or more"},
        )
        due.append((str(instance_id), state, queue))
    return due


def sync_power_states(host_id) -> dict[str, list[str]]:
    """The reconciler: compare libvirt with the database for settled instances, and repair.

    - A guest that powered itself off is recorded as stopped, by the tenant's hand (the guest
      is the tenant's).
    - A guest stopped by anything else (destroyed on the host, QEMU crashed, the host
      rebooted) was meant to run: the time until it runs again is the system's downtime, and
      it is started again.
    - A domain that vanished is an error of the system's making, for an operator.
    - An ERROR instance whose guest runs (a build or action that failed after the guest was
      up, say through a lost connection) is running: it is recorded so.
    - A rescue system stays in rescue whatever its power (the customer may shut it down and
      then leave rescue); its power state is kept true for the page. Gone, it is an error.
    """
    host = Host.objects.get(pk=host_id)
    seen = {stats.uuid: stats for stats in driver(host).all_stats()}
    report: dict[str, list[str]] = {
        "stopped": [],
        "started": [],
        "missing": [],
        "restarted": [],
        "recovered": [],
        "rescue_power": [],
    }
    for instance in Instance.objects.filter(host=host, state__in=[S.RUNNING, S.STOPPED, S.ERROR, S.RESCUE]):
        stats = seen.get(str(instance.pk))
        power = stats.power if stats else "missing"
        if instance.state == S.ERROR:
            ran_before = bool(instance.launched_at)
            if power == "running" and ran_before and settle_observed(instance, S.RUNNING, power, cause="system"):
                report["recovered"].append(str(instance.pk))
        elif power == "missing":
            if settle_observed(
                instance, S.ERROR, "missing", error_step="sync", error_message="The domain is missing on its host."
            ):
                report["missing"].append(str(instance.pk))
        elif instance.state == S.RESCUE:
            if power != instance.power_state and Instance.objects.filter(pk=instance.pk, state=S.RESCUE).update(
                power_state=power
            ):
                report["rescue_power"].append(str(instance.pk))
        elif instance.state == S.RUNNING and power in ("shutoff", "crashed"):
            if stats.stopped_by == "guest":
                if settle_observed(instance, S.STOPPED, power, vnc_port=None):
                    report["stopped"].append(str(instance.pk))
            elif _restart(instance, power, stats.stopped_by):
                report["restarted"].append(str(instance.pk))
        elif instance.state == S.STOPPED and power == "running" and settle_observed(instance, S.RUNNING, power):
            report["started"].append(str(instance.pk))
    return report


@transaction.atomic  # the state, its log row and the action row together
def settle_observed(
    instance: Instance, to_state: str, power: str, *, cause: str | None = None, step: str = "power", **fields
) -> bool:
    """Record what the host shows (`power`) as the instance's state, if it is still in the state
    it was read in; with its state-log row and a "sync" action row (`step`)."""
    changed = Instance.objects.filter(pk=instance.pk, state=instance.state).update(
        state=to_state, power_state=power, **fields
    )
    if changed:
        # A guest that powered itself off did so by the tenant's hand; a vanished domain did not.
        cause = cause or ("system" if to_state == S.ERROR else "tenant")
        history.record_state(instance.pk, to_state, cause=cause)
        InstanceAction.objects.create(
            instance=instance,
            action="sync",
            step=step,
            status=InstanceAction.Status.DONE,
            detail={"from": instance.state, "to": to_state, "power": power},
        )
    return bool(changed)


def _restart(instance: Instance, power: str, stopped_by: str) -> bool:
    """Start again a guest the system stopped; down (for SLA) until it runs again."""
    from compute import tasks  # tasks imports this module

    with transaction.atomic():
        changed = Instance.objects.filter(pk=instance.pk, state=S.RUNNING).update(
            state=S.STARTING, power_state=power, vnc_port=None, pending={"from_state": S.STOPPED}
        )
        if not changed:
            return False
        history.record_state(instance.pk, S.ERROR, cause="system")
        InstanceAction.objects.create(
            instance=instance,
            action="sync",
            step="power",
            status=InstanceAction.Status.DONE,
            detail={"from": S.RUNNING, "to": S.STARTING, "power": power, "stopped_by": stopped_by},
        )
        InstanceAction.objects.create(
            instance=instance,
            action="start",
            status=InstanceAction.Status.REQUESTED,
            detail={"reason": "stopped on its host without the tenant asking; started again"},
        )
        instance_id, queue = str(instance.pk), instance.host.queue
        transaction.on_commit(lambda: tasks.start.apply_async(args=[instance_id], queue=queue))
    return True


def report_orphans(host_id) -> dict:
    """Domains and volumes on the host that no live instance or image owns."""
    host = Host.objects.get(pk=host_id)
    found = driver(host).inventory()
    owned_ids = {
        str(i) for i in Instance.objects.filter(host=host).exclude(state=S.DELETED).values_list("id", flat=True)
    }
    image_volumes = {image.volume_name for image in Image.objects.exclude(state=Image.State.DELETED)}
    orphan_domains = [uuid for uuid in found["domains"] if uuid not in owned_ids]
    orphan_volumes = [
        name
        for name in found["volumes"]
        if not (name.startswith("img-") and name.removesuffix(COMPLETE_SUFFIX) in image_volumes)
        and not (name.startswith("inst-") and name[5:41] in owned_ids)
    ]
    report = {"domains": orphan_domains, "volumes": orphan_volumes, "checked_at": timezone.now().isoformat()}
    Host.objects.filter(pk=host.pk).update(orphans=report)
    return report
