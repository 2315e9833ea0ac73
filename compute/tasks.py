"""Celery tasks: thin wrappers that pass ids to compute.operations on the host's own queue.

Every instance task first takes the instance's lease (compute.leases), so two tasks never
work on one instance at once: a delete queued during a build waits until the build has seen
that it was superseded and stopped. What happens when a task cannot finish:
- transient trouble (the host unreachable or answering "try later", libvirtd restarting, the
  database connection lost) is retried with exponential backoff, `RETRY["max_retries"]` times
  (Celery's Django fixup opens a fresh database connection for each run);
- busy (the instance or a host lock held by another task) is retried shortly, without counting
  as a failure;
- anything else, or transient trouble that outlasts the retries, puts the instance in ERROR
  naming the step that failed;
- a worker that dies outright leaves the instance in its in-flight state with no lease:
  `reap_stalled` (beat) queues the action again, and the steps are idempotent.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from compute import evacuation, idempotency, images, leases, operations, upkeep
from compute.drivers.base import TransientHostError
from compute.models import Host, InstanceState
from compute.redis_locks import Busy

log = logging.getLogger(__name__)
S = InstanceState
RETRY = {"max_retries": 5, "countdown_base": 2}
# Busy work is put back on the queue this often, for at most an hour.
BUSY_COUNTDOWN = 2
BUSY_RETRIES = 1800
# How long a task waits in place for an instance lease before putting itself back on the queue.
LEASE_WAIT_SECONDS = 5

TRANSIENT = (TransientHostError, OperationalError, InterfaceError)
# No retry limit of Celery's own: `attempt` counts failures (RETRY), and busy retries are
# bounded by BUSY_RETRIES where they are made.
instance_task = shared_task(bind=True, max_retries=None)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, operations.StepFailed):
        exc = exc.error
    return isinstance(exc, TRANSIENT)


def _take_lease(instance_id: str) -> leases.Lease | None:
    lease = leases.Lease(leases.instance_key(instance_id))
    deadline = time.monotonic() + LEASE_WAIT_SECONDS
    while not lease.acquire():
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)
    return lease


def _run(task, instance_id: str, work, in_flight: str, attempt: int, on_failure=None) -> str:
    """`work` returns "skipped" when the instance is no longer `in_flight` (done already, or
    superseded: a redelivered or reaped copy)."""
    lease = _take_lease(instance_id)
    if lease is None:
        # Another task holds the instance (a build that a delete superseded, say); it lets go
        # at its next step.
        raise task.retry(countdown=BUSY_COUNTDOWN, max_retries=BUSY_RETRIES, kwargs={"attempt": attempt})
    # The retry is sent after the lease is let go: an eager retry runs at once, in this call.
    again: tuple[int, int, int | None] | None = None
    try:
        with operations.fenced(lease, in_flight):
            return work(instance_id)
    except operations.Superseded:
        return "superseded"
    except Busy as exc:
        log.info("instance %s waits: %s", instance_id, exc)
        again = (BUSY_COUNTDOWN, attempt, BUSY_RETRIES)
    except Exception as exc:
        if not (_transient(exc) and attempt < RETRY["max_retries"]):
            if on_failure:
                on_failure(instance_id)
            operations.mark_failed(instance_id, in_flight, exc)
            log.error("instance %s failed: %s", instance_id, exc)
            if isinstance(exc, operations.StepFailed | TransientHostError):
                return "error"
            raise  # a bug: marked failed, and shown in the worker's log with its traceback
        log.warning("transient failure on %s, try %d: %s", instance_id, attempt + 1, exc)
        # max_retries=None: `attempt` counts the failures, and busy retries do not count.
        again = (RETRY["countdown_base"] ** (attempt + 1), attempt + 1, None)
    finally:
        lease.release()
    countdown, next_attempt, limit = again
    raise task.retry(countdown=countdown, max_retries=limit, kwargs={"attempt": next_attempt})


@instance_task
def provision(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.provision, S.BUILDING, attempt)


@instance_task
def start(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.start, S.STARTING, attempt)


@instance_task
def stop(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.stop, S.STOPPING, attempt)


@instance_task
def reboot(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.reboot, S.REBOOTING, attempt)


@instance_task
def resize(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.resize, S.RESIZING, attempt, operations.undo_resize_claim)


@instance_task
def rebuild(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.rebuild, S.REBUILDING, attempt)


@instance_task
def snapshot(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.snapshot, S.SNAPSHOTTING, attempt, operations.fail_snapshot_image)


@instance_task
def delete(self, instance_id: str, attempt: int = 0) -> str:
    result = _run(self, instance_id, operations.delete, S.DELETING, attempt)
    if result == "deleted":
        images.remove_unused_file_of(instance_id)  # the last instance of a deleted image
    return result


@instance_task
def detach_iso(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.detach_iso, S.DETACHING_ISO, attempt)


@instance_task
def rescue(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.rescue, S.RESCUING, attempt)


@instance_task
def unrescue(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.unrescue, S.UNRESCUING, attempt)


# The task that carries an instance out of each in-flight state, for the reaper.
@instance_task
def migrate(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.migrate, S.MIGRATING, attempt, operations.undo_migration)


@instance_task
def evacuate(self, instance_id: str, attempt: int = 0) -> str:
    return _run(self, instance_id, operations.evacuate, S.EVACUATING, attempt)


TASK_FOR_STATE = {
    S.BUILDING: provision,
    S.STARTING: start,
    S.STOPPING: stop,
    S.REBOOTING: reboot,
    S.RESIZING: resize,
    S.REBUILDING: rebuild,
    S.SNAPSHOTTING: snapshot,
    S.DELETING: delete,
    S.DETACHING_ISO: detach_iso,
    S.RESCUING: rescue,
    S.UNRESCUING: unrescue,
    S.MIGRATING: migrate,
    S.EVACUATING: evacuate,
}


@shared_task(autoretry_for=(Busy, TransientHostError), retry_backoff=True, max_retries=5)
def sync_firewall(host_id: str) -> list[str]:
    """Apply the host's packet filters as the database has them (compute.firewall)."""
    return operations.sync_firewall(host_id)


@shared_task(autoretry_for=(Busy, TransientHostError), retry_backoff=True, max_retries=5)
def refresh_dns(instance_id: str) -> str:
    """The host network's DNS record of the instance, after a rename."""
    return operations.refresh_dns(instance_id)


@shared_task
def reap_stalled() -> list[str]:
    """Beat: queue again the work of instances left in flight with no task holding them."""
    resumed = []
    for instance_id, state, queue in upkeep.stalled_instances():
        TASK_FOR_STATE[state].apply_async(args=[instance_id], queue=queue)
        resumed.append(instance_id)
    if resumed:
        log.warning("resumed the work of %d instance(s) no worker held: %s", len(resumed), ", ".join(resumed))
    return resumed


@shared_task
def delete_image_volumes(image_id: str, host_id: str) -> str:
    return operations.delete_image_volumes(image_id, host_id)


# -- periodic ---------------------------------------------------------------------------------


@shared_task
def host_heartbeat(host_id: str) -> dict:
    report = upkeep.heartbeat(host_id)
    if report["returned"] or evacuation.outage_left(host_id):
        # Back from the dead (or a worker died reclaiming): copies of instances that run
        # elsewhere now go first.
        report["reclaimed"] = evacuation.reclaim_host(host_id)
    return report


@shared_task
def host_sync(host_id: str) -> dict:
    return upkeep.sync_power_states(host_id)


@shared_task
def host_orphans(host_id: str) -> dict:
    return upkeep.report_orphans(host_id)


# Disabled (draining) hosts still run guests: they are watched like any other.
WATCHED = [Host.Status.UP, Host.Status.DOWN, Host.Status.DISABLED]


def _fan_out(task, statuses) -> int:
    hosts = Host.objects.filter(status__in=statuses).values_list("id", "queue")
    for host_id, queue in hosts:
        # Expiring keeps a dead host's queue from piling up beats it will never answer.
        task.apply_async(args=[str(host_id)], queue=queue, expires=settings.HOST_HEARTBEAT_SECONDS)
    return len(hosts)


@shared_task
def check_hosts() -> dict:
    """Beat: ask every host for a heartbeat; mark hosts down whose worker stayed silent and
    whose hypervisor does not answer either."""
    report = upkeep.check_silent_hosts()
    # Every down host, not only those just taken down: what found no room, or a fence that
    # failed, is tried again.
    down = Host.objects.filter(status=Host.Status.DOWN).values_list("name", "id")
    evacuated = {name: evacuation.evacuate_host(host_id) for name, host_id in down}
    report["evacuated"] = {name: done for name, done in evacuated.items() if any(done.values())}
    upkeep.ask_for_heartbeats(WATCHED)
    asked = _fan_out(host_heartbeat, WATCHED)
    return {"asked": asked, **report}


@shared_task
def sync_all_hosts() -> int:
    return _fan_out(host_sync, [Host.Status.UP, Host.Status.DISABLED])


@shared_task
def report_all_orphans() -> int:
    return _fan_out(host_orphans, [Host.Status.UP, Host.Status.DISABLED])


@shared_task
def expire_keys() -> int:
    return idempotency.expire()


# -- images -----------------------------------------------------------------------------------


@shared_task
def import_image(image_id: str) -> str:
    """Control queue: download a URL import, check it, and make it an active image."""
    return images.run_url_import(image_id)
