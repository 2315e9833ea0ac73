"""Celery tasks: thin wrappers that pass ids to compute.operations on the host's own queue.

Transient host errors are retried with exponential backoff; anything else, or a transient
error that outlasts the retries, puts the instance in ERROR naming the step that failed.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from compute import operations
from compute.drivers.base import TransientHostError
from compute.models import Host, InstanceState
from compute.services import expire_idempotency_keys

log = logging.getLogger(__name__)
S = InstanceState
RETRY = {"max_retries": 5, "countdown_base": 2}


def _run(task, instance_id: str, work, in_flight: str, on_failure=None) -> str:
    try:
        return work(instance_id)
    except operations.StepFailed as failure:
        if isinstance(failure.error, TransientHostError) and task.request.retries < RETRY["max_retries"]:
            countdown = RETRY["countdown_base"] ** (task.request.retries + 1)
            log.warning("transient failure on %s, retry in %ss: %s", instance_id, countdown, failure)
            # Our limit, not Celery's default of 3: past that, retry() re-raises `failure` out
            # of this handler and the instance would stay in its in-flight state for ever.
            raise task.retry(countdown=countdown, exc=failure, max_retries=RETRY["max_retries"]) from failure
        if on_failure:
            on_failure(instance_id)
        operations.mark_failed(instance_id, in_flight, failure)
        log.error("instance %s failed at %s: %s", instance_id, failure.step, failure)
        return "error"
    except Exception as exc:
        # A bug or a database fault must not leave the instance stuck in its in-flight state.
        if on_failure:
            on_failure(instance_id)
        operations.mark_failed(instance_id, in_flight, exc)
        raise


@shared_task(bind=True)
def provision(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.provision, S.BUILDING)


@shared_task(bind=True)
def start(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.start, S.STARTING)


@shared_task(bind=True)
def stop(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.stop, S.STOPPING)


@shared_task(bind=True)
def reboot(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.reboot, S.REBOOTING)


@shared_task(bind=True)
def resize(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.resize, S.RESIZING, operations.undo_resize_claim)


@shared_task(bind=True)
def rebuild(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.rebuild, S.REBUILDING)


@shared_task(bind=True)
def snapshot(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.snapshot, S.SNAPSHOTTING, operations.fail_snapshot_image)


@shared_task(bind=True)
def delete(self, instance_id: str) -> str:
    return _run(self, instance_id, operations.delete, S.DELETING)


# -- periodic ---------------------------------------------------------------------------------


@shared_task
def host_heartbeat(host_id: str) -> dict:
    return operations.heartbeat(host_id)


@shared_task
def host_sync(host_id: str) -> dict:
    return operations.sync_power_states(host_id)


@shared_task
def host_orphans(host_id: str) -> dict:
    return operations.report_orphans(host_id)


def _fan_out(task, statuses) -> int:
    hosts = Host.objects.filter(status__in=statuses).values_list("id", "queue")
    for host_id, queue in hosts:
        # Expiring keeps a dead host's queue from piling up beats it will never answer.
        task.apply_async(args=[str(host_id)], queue=queue, expires=settings.HOST_HEARTBEAT_SECONDS)
    return len(hosts)


@shared_task
def check_hosts() -> dict:
    """Beat: ask every host for a heartbeat; mark hosts that stayed silent down."""
    down = operations.mark_silent_hosts_down()
    asked = _fan_out(host_heartbeat, [Host.Status.UP, Host.Status.DOWN])
    return {"asked": asked, "marked_down": down}


@shared_task
def sync_all_hosts() -> int:
    return _fan_out(host_sync, [Host.Status.UP])


@shared_task
def report_all_orphans() -> int:
    return _fan_out(host_orphans, [Host.Status.UP])


@shared_task
def expire_keys() -> int:
    return expire_idempotency_keys()
