"""The worker's side of every instance action: idempotent steps against the host's driver.

Each function loads the instance, returns at once if it is no longer in the state its action
set (the work was done, or superseded), runs its steps (each recorded in the action log with
its duration), and settles the state with a conditional UPDATE, so a redelivered task can run
any number of times and change nothing the second time. No transaction is held open while
the hypervisor works.
"""

from __future__ import annotations

import contextvars
import logging
import time
from contextlib import contextmanager
from functools import cache

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from base import rows
from compute import cloudinit, dns, firewall, history, leases, redis_locks, scheduler, signals, step_log
from compute.driver_refs import driver, image_ref, instance_driver
from compute.drivers.base import DomainSpec, HostError, TransientHostError
from compute.models import Host, Image, Instance, InstanceAction, InstanceState, IpAllocation, IpPool
from compute.row_locks import lock_host, lock_instance
from compute.sizing import Size
from tenants.models import Tenant

log = logging.getLogger(__name__)
S = InstanceState
INTERRUPTED = "Interrupted: the worker running this step stopped before it finished; the action was resumed."


class Superseded(Exception):
    """The instance left the state this task works for (a delete came), or the task lost its
    lease: it must not touch the host again."""


# The lease and in-flight state of the task running in this thread (set by compute.tasks).
_fence: contextvars.ContextVar[tuple[leases.Lease, str] | None] = contextvars.ContextVar("fence", default=None)


@contextmanager
def fenced(lease: leases.Lease, in_flight: str):
    token = _fence.set((lease, in_flight))
    try:
        with step_log.deferring():
            yield
    finally:
        _fence.reset(token)


def _check_fence(instance: Instance) -> None:
    """Before a step touches the host: this task still owns the instance, which is still in
    the state its action set."""
    fence = _fence.get()
    if fence is None:
        return  # called directly (tests, shell): the caller serializes
    lease, in_flight = fence
    held, (deleting,) = lease.held(leases.deleting_key(instance.pk))
    if not held:
        raise Superseded(f"lost the lease of {instance.pk}")
    # Only a delete can take an instance out of another action's in-flight state.
    if deleting is not None and in_flight != S.DELETING:
        raise Superseded(f"{instance.pk} is being deleted")


def _fault_pause(action: str, name: str) -> None:
    """For the fault tests only: hold a step so that a test can kill this worker inside it."""
    where = settings.FAULT_PAUSE_AT
    if where and where == f"{action}:{name}":
        time.sleep(settings.FAULT_PAUSE_SECONDS)


class StepFailed(Exception):
    def __init__(self, step: str, error: Exception):
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error


@contextmanager
def step(instance: Instance, action: str, name: str, *, while_state: str | None = None):
    """Run one step, recording it with its duration; failures carry the step's name.
    `while_state`: run it only if the instance is still in that state (checked as its row is
    written), else it is superseded."""
    _check_fence(instance)
    row = InstanceAction(instance=instance, action=action, step=name, status=InstanceAction.Status.RUNNING)
    if not step_log.start(row, while_state=while_state):
        raise Superseded(f"{instance.pk} is no longer {while_state}")
    started = time.monotonic()
    try:
        _fault_pause(action, name)
        yield
    except (HostError, TransientHostError) as exc:
        _finish(row, started, InstanceAction.Status.FAILED, str(exc))
        raise StepFailed(name, exc) from exc
    _finish(row, started, InstanceAction.Status.DONE)


def _finish(row: InstanceAction, started: float, status: str, error: str = "") -> None:
    row.status = status
    row.error = error[:2000]
    row.duration_ms = int((time.monotonic() - started) * 1000)
    step_log.finish(row, at_once=status != InstanceAction.Status.DONE)


def _load(instance_id, expected: str) -> Instance | None:
    instance = _instance_with_relations(instance_id)
    if instance is None or instance.state != expected:
        return None
    if _fence.get() is not None:
        step_log.interrupt_stale(instance_id, INTERRUPTED)
    return instance


def _instance_with_relations(instance_id) -> Instance | None:
    """The instance with its host, image and tenant, as every task of it starts: one
    written-out query (base.rows)."""
    with connection.cursor() as cursor:
        cursor.execute(_instance_sql(), [instance_id])
        row = cursor.fetchone()
    if row is None:
        return None
    (instance, instance.host, instance.image, instance.tenant), _rest = rows.load(row, (Instance, Host, Image, Tenant))
    return instance


@cache
def _instance_sql() -> str:
    table = {model: connection.ops.quote_name(model._meta.db_table) for model in (Instance, Host, Image, Tenant)}
    aliases = (("i", Instance), ("h", Host), ("m", Image), ("t", Tenant))
    select = ", ".join(rows.columns(alias, model) for alias, model in aliases)
    return (
        f"SELECT {select} FROM {table[Instance]} i "  # noqa: S608 (names from the models)
        f"JOIN {table[Host]} h ON h.id = i.host_id JOIN {table[Image]} m ON m.id = i.image_id "
        f"JOIN {table[Tenant]} t ON t.id = i.tenant_id WHERE i.id = %s"
    )


def _settle(instance: Instance, from_state: str, to_state: str, **fields) -> bool:
    """Conditional transition: only one run of a task can move the instance on. The state and
    its log row (what billing and the SLA read) commit together, and with the steps' rows
    still waiting (they say done before the state does): all one statement. A worker dying
    before it leaves all of them unwritten, never a stopped instance billed as running."""
    return _settled(instance.pk, from_state, to_state, "tenant", {"pending": {}, **fields})


def _settled(instance_id, from_state: str, to_state: str, cause: str, fields: dict) -> bool:
    sql, params = history.settle_statement(instance_id, from_state, to_state, cause=cause, fields=fields)
    (moved,) = step_log.with_waiting(sql, params)
    return moved == 1


def mark_failed(instance_id, from_state: str, failure: StepFailed | Exception) -> None:
    step_name = failure.step if isinstance(failure, StepFailed) else ""
    fields = {"error_step": step_name, "error_message": str(failure)[:2000]}
    _settled(instance_id, from_state, S.ERROR, "system", fields)


def _spec(instance: Instance, size: Size | None = None, *, rescue: bool = False) -> DomainSpec:
    size = size or Size.of_instance(instance)
    # Mbit/s to the KiB/s that libvirt's <bandwidth> takes.
    kbytes = size.bandwidth_mbit * 1000 // 8 if instance.host.shaping else None
    if instance.throttled and instance.throttle_kbytes:
        kbytes = instance.throttle_kbytes
    return DomainSpec(
        uuid=str(instance.pk),
        vcpus=size.vcpus,
        memory_mb=size.memory_mb,
        disk_gb=size.disk_gb,
        mac=instance.mac_address,
        bandwidth_kbytes=kbytes,
        # Installed from a CD: nothing in it reads a cloud-init seed.
        with_seed=instance.image.format != Image.Format.ISO,
        iso_volume=instance.iso.volume_name if instance.iso_id else None,
        rescue=rescue,
        ip=instance.ip_address,
        packet_filter=firewall.instance_filter_name(instance),
    )


def _seed(instance: Instance) -> bytes:
    return cloudinit.build_seed(
        uuid=str(instance.pk),
        hostname=cloudinit.hostname_for(instance.name, str(instance.pk)),
        ssh_keys=instance.ssh_keys,
        user_data=instance.user_data,
        password_hash=instance.password_hash,
    )


def _build(instance: Instance, action: str, image: Image) -> None:
    """The shared steps of create and rebuild, from base image to a running domain."""
    drv = instance_driver(instance)
    uuid = str(instance.pk)
    # Two builds of one image on one host would write the same volume.
    with step(instance, action, "image"), redis_locks.held(instance.host_id, f"image:{image.pk}"):
        _fault_pause(action, "upload")
        drv.ensure_base_image(image_ref(image))
    with step(instance, action, "disk"):
        drv.ensure_disk(uuid, image_ref(image), instance.disk_gb)
    with step(instance, action, "seed"):
        if image.format != Image.Format.ISO:
            drv.ensure_seed(uuid, _seed(instance))
    with step(instance, action, "dhcp"):
        # The DHCP name must be unique on the network (libvirt refuses duplicates), whatever
        # the tenants call their instances; the guest's own hostname comes from cloud-init.
        drv.ensure_dhcp(instance.mac_address, instance.ip_address, f"i-{instance.pk.hex}")
        _ensure_dns(instance)
    with step(instance, action, "firewall"):
        # Before the domain exists: its interface refers to the filter, and a guest must never
        # run for a moment without one.
        firewall.apply_host(instance.host)
    with step(instance, action, "define"):
        drv.ensure_defined(_spec(instance))


def _ensure_dns(instance: Instance) -> None:
    name = dns.name_of(instance)
    instance_driver(instance).ensure_dns(instance.ip_address, (name,) if name else ())


def refresh_dns(instance_id) -> str:
    """The DNS record of a live instance as its current name says (after a rename)."""
    instance = Instance.objects.select_related("host", "tenant").filter(pk=instance_id).first()
    if instance is None or instance.state in firewall.NOT_MEMBERS:
        return "skipped"
    _ensure_dns(instance)
    return "updated"


def sync_firewall(host_id) -> list[str]:
    """Apply a host's packet filters as the database has them now."""
    leases.client().delete(firewall.sync_key(host_id))  # changes from now on queue another sync
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return []
    return firewall.apply_host(host)


def _start(instance: Instance, action: str, *, while_state: str | None = None):
    with step(instance, action, "start", while_state=while_state):
        return instance_driver(instance).start(str(instance.pk))


def provision(instance_id) -> str:
    instance = _load(instance_id, S.BUILDING)
    if instance is None:
        return "skipped"
    _build(instance, "create", instance.image)
    # Deleted while building: the delete task cleans up (Superseded, when the step begins).
    status = _start(instance, "create", while_state=S.BUILDING)
    # A retried instance that ran before keeps its launch time.
    launched_at = instance.launched_at or timezone.now()
    _settle(
        instance,
        S.BUILDING,
        S.RUNNING,
        power_state=status.power,
        vnc_port=status.vnc_port,
        launched_at=launched_at,
        password_hash="",  # in the seed now; the portal keeps nothing of the password
    )
    return "running"


def start(instance_id) -> str:
    instance = _load(instance_id, S.STARTING)
    if instance is None:
        return "skipped"
    status = _start(instance, "start")
    _settle(instance, S.STARTING, S.RUNNING, power_state=status.power, vnc_port=status.vnc_port)
    return "running"


def _stop(instance: Instance, action: str):
    with step(instance, action, "stop"):
        return instance_driver(instance).stop(str(instance.pk), settings.INSTANCE_STOP_TIMEOUT)


def stop(instance_id) -> str:
    instance = _load(instance_id, S.STOPPING)
    if instance is None:
        return "skipped"
    status = _stop(instance, "stop")
    _settle(instance, S.STOPPING, S.STOPPED, power_state=status.power, vnc_port=None)
    return "stopped"


def reboot(instance_id) -> str:
    instance = _load(instance_id, S.REBOOTING)
    if instance is None:
        return "skipped"
    with step(instance, "reboot", "reboot"):
        status = instance_driver(instance).reboot(str(instance.pk))
    _settle(instance, S.REBOOTING, S.RUNNING, power_state=status.power, vnc_port=status.vnc_port)
    return "running"


def resize(instance_id) -> str:
    instance = _load(instance_id, S.RESIZING)
    if instance is None:
        return "skipped"
    new = Size.from_json(instance.pending["size"])
    was_running = instance.pending.get("from_state") == S.RUNNING
    drv = instance_driver(instance)
    if was_running:
        _stop(instance, "resize")
    with step(instance, "resize", "define"):
        drv.ensure_defined(_spec(instance, new))
    with step(instance, "resize", "disk"):
        drv.grow_disk(str(instance.pk), new.disk_gb)
    fields = {**new.as_fields(), "power_state": "shutoff", "vnc_port": None}
    if instance.pending.get("flavor"):
        fields["flavor_id"] = instance.pending["flavor"]
    elif "flavor" in instance.pending:
        fields["flavor_id"] = None
    if was_running:
        instance.vcpus, instance.memory_mb = new.vcpus, new.memory_mb
        status = _start(instance, "resize")
        fields.update(power_state=status.power, vnc_port=status.vnc_port)
    _settle(instance, S.RESIZING, S.RUNNING if was_running else S.STOPPED, **fields)
    return "resized"


def undo_resize_claim(instance_id) -> None:
    """A failed resize gives back the extra room it claimed; the instance keeps its old size."""
    with transaction.atomic():
        current = Instance.objects.filter(pk=instance_id).only("host_id").first()
        if current is None:
            return
        lock_host(current.host_id)
        instance = lock_instance(instance_id)
        if instance.state != S.RESIZING or not instance.pending.get("size"):
            return  # never claimed, or already given back
        scheduler.claim_delta(instance.host_id, Size.from_json(instance.pending["size"]), Size.of_instance(instance))
        Instance.objects.filter(pk=instance.pk).update(pending={**instance.pending, "size": None})


def rebuild(instance_id) -> str:
    instance = _load(instance_id, S.REBUILDING)
    if instance is None:
        return "skipped"
    image = Image.objects.get(pk=instance.pending["image"])
    drv = instance_driver(instance)
    _stop(instance, "rebuild")
    with step(instance, "rebuild", "wipe"):
        drv.delete_disk(str(instance.pk))
    instance.image = image
    # A rebuild from an install ISO starts an installation again, on an empty disk.
    instance.iso = image if image.format == Image.Format.ISO else None
    _build(instance, "rebuild", image)
    status = _start(instance, "rebuild")
    _settle(
        instance,
        S.REBUILDING,
        S.RUNNING,
        image=image,
        iso=instance.iso,
        power_state=status.power,
        vnc_port=status.vnc_port,
        launched_at=instance.launched_at or timezone.now(),
    )
    return "running"


def snapshot(instance_id) -> str:
    instance = _load(instance_id, S.SNAPSHOTTING)
    if instance is None:
        return "skipped"
    image = Image.objects.get(pk=instance.pending["image"])
    was_running = instance.pending.get("from_state") == S.RUNNING
    if was_running:
        _stop(instance, "snapshot")  # an offline copy is a consistent one
    with step(instance, "snapshot", "copy"):
        size = instance_driver(instance).snapshot(str(instance.pk), image_ref(image))
    Image.objects.filter(pk=image.pk).update(state=Image.State.ACTIVE, size_bytes=size)
    fields = {"power_state": "shutoff", "vnc_port": None}
    if was_running:
        status = _start(instance, "snapshot")
        fields = {"power_state": status.power, "vnc_port": status.vnc_port}
    _settle(instance, S.SNAPSHOTTING, S.RUNNING if was_running else S.STOPPED, **fields)
    return "snapshotted"


def detach_iso(instance_id) -> str:
    """The install CD comes out: a running guest sees its tray ejected at once (the installer's
    "remove the media and reboot" then boots the disk), and the domain is defined again without
    the CD, booting the disk first."""
    instance = _load(instance_id, S.DETACHING_ISO)
    if instance is None:
        return "skipped"
    drv = instance_driver(instance)
    with step(instance, "detach_iso", "eject"):
        drv.eject_cdrom(str(instance.pk))
    instance.iso = None
    with step(instance, "detach_iso", "define"):
        drv.ensure_defined(_spec(instance))
    back = instance.pending.get("from_state", S.RUNNING)
    _settle(instance, S.DETACHING_ISO, back, iso=None)
    return "detached"


def _rescue_image(instance: Instance) -> Image:
    image = Image.objects.filter(pk=instance.pending.get("rescue_image")).first()
    if image is None:
        raise StepFailed("rescue", HostError("the rescue image chosen for this rescue is gone"))
    return image


def rescue(instance_id) -> str:
    """Stop the guest, then boot the rescue system with the instance's disk as its second disk.
    The instance's own disk is never written by these steps."""
    instance = _load(instance_id, S.RESCUING)
    if instance is None:
        return "skipped"
    image = _rescue_image(instance)
    drv = instance_driver(instance)
    uuid = str(instance.pk)
    _stop(instance, "rescue")
    with step(instance, "rescue", "image"), redis_locks.held(instance.host_id, f"image:{image.pk}"):
        drv.ensure_base_image(image_ref(image))
    with step(instance, "rescue", "disk"):
        drv.ensure_rescue_disk(uuid, image_ref(image), image.min_disk_gb)
    with step(instance, "rescue", "define"):
        drv.ensure_defined(_spec(instance, rescue=True))
    status = _start(instance, "rescue")
    _settle(instance, S.RESCUING, S.RESCUE, power_state=status.power, vnc_port=status.vnc_port)
    return "rescue"


def unrescue(instance_id) -> str:
    """Stop the rescue system, boot the instance's own disk again, drop the rescue disk."""
    instance = _load(instance_id, S.UNRESCUING)
    if instance is None:
        return "skipped"
    drv = instance_driver(instance)
    _stop(instance, "unrescue")
    with step(instance, "unrescue", "define"):
        drv.ensure_defined(_spec(instance))
    with step(instance, "unrescue", "disk"):
        drv.delete_rescue_disk(str(instance.pk))
    status = _start(instance, "unrescue")
    _settle(instance, S.UNRESCUING, S.RUNNING, power_state=status.power, vnc_port=status.vnc_port)
    return "running"


def migrate(instance_id) -> str:
    """Move an instance to the host its migration claimed (compute.migration): a stopped one
    by copying its disk, a running one live."""
    instance = _load(instance_id, S.MIGRATING)
    if instance is None:
        return "skipped"
    target = Host.objects.filter(pk=instance.pending.get("target")).first()
    if target is None:
        raise StepFailed("switch", HostError("the migration's target host is gone"))
    source = instance.host
    src, dst = instance_driver(instance, source), instance_driver(instance, target)
    uuid = str(instance.pk)
    live = instance.pending.get("from_state") == S.RUNNING
    if instance.shared_disk:
        # Both hosts see the disk on the segment's shared storage: nothing to copy.
        with step(instance, "migrate", "disk"):
            if not dst.has_disk(uuid):
                raise HostError(f"the disk of {uuid} is not in the shared pool of {target.name}")
    elif live:
        with step(instance, "migrate", "prepare"):
            dst.prepare_disk(uuid, src.disk_capacity(uuid))
    else:
        with step(instance, "migrate", "export"):
            _capacity, length = src.export_disk(uuid)
        with step(instance, "migrate", "import"):
            dst.import_disk(uuid, length, src.read_export(uuid))
    # From here on the guest is built as it will be on the target, at its new address.
    moved = Instance.objects.select_related("host", "image", "tenant", "iso").get(pk=instance.pk)
    moved.host, moved.ip_address = target, instance.pending["address"]
    with step(instance, "migrate", "seed"):
        if moved.image.format != Image.Format.ISO:
            dst.ensure_seed(uuid, _seed(moved))
        if moved.iso_id:
            with redis_locks.held(target.pk, f"image:{moved.iso_id}"):
                dst.ensure_base_image(image_ref(moved.iso))
    with step(instance, "migrate", "dhcp"):
        dst.ensure_dhcp(moved.mac_address, moved.ip_address, f"i-{moved.pk.hex}")
        _ensure_dns(moved)
    with step(instance, "migrate", "firewall"):
        firewall.apply_host(target)
    if live:
        with step(instance, "migrate", "migrate"):
            # Metering's last look at the old QEMU's counters; the new one starts at zero.
            reading = [stats for stats in src.all_stats() if stats.uuid == uuid]
            if reading:
                signals.leaving_host.send(sender=Instance, host=source, stats=reading[0])
            status = src.migrate_live(
                uuid,
                dst,
                _spec(moved),
                copy_storage=not instance.shared_disk,
                trust_shared=settings.LIVE_MIGRATION_TRUST_SHARED_POOLS,
            )
        settled_fields = {"power_state": status.power, "vnc_port": status.vnc_port}
    else:
        with step(instance, "migrate", "define"):
            dst.ensure_defined(_spec(moved))
        settled_fields = {"vnc_port": None}
    back = S.RUNNING if live else S.STOPPED
    with step(instance, "migrate", "switch"), transaction.atomic():
        for host_id in sorted([source.pk, target.pk], key=str):
            lock_host(host_id)
        switched = _settle(instance, S.MIGRATING, back, host=target, ip_address=moved.ip_address, **settled_fields)
        if switched:
            scheduler.release(source.pk, Size.of_instance(instance))
            held = IpAllocation.objects.filter(instance=instance, pool__host=source)
            if not IpAllocation.objects.filter(instance=instance, pool__host=target).exists():
                # One segment: no address was taken on the target; this one moves along.
                target_pool = IpPool.objects.get(host=target)
                IpAllocation.objects.filter(pool=target_pool, address=moved.ip_address, instance=None).delete()
                held.update(pool=target_pool)
            else:
                held.update(instance=None, released_at=timezone.now())
    if not switched:
        return "skipped"
    _clean_source(instance, source)
    return "migrated"


def _clean_source(instance: Instance, source: Host) -> None:
    """What the instance left on its old host. It runs elsewhere now whatever happens here:
    a failure is logged, and the hourly orphan report shows what stayed."""
    try:
        with step(instance, "migrate", "cleanup"):
            drv = instance_driver(instance, source)
            if instance.shared_disk:
                drv.forget(str(instance.pk), instance.mac_address)  # the disk is the target's now
            else:
                drv.delete(str(instance.pk), instance.mac_address)
                drv.delete_export(str(instance.pk))
        firewall.apply_host(source)
    except (StepFailed, HostError, TransientHostError, redis_locks.Busy, Superseded) as exc:
        log.warning("leftovers of %s on %s: %s", instance.pk, source.name, exc)


def undo_migration(instance_id) -> None:
    """A migration that failed before its switch: the target's claim, address and copies go,
    and the instance stays stopped where it was (the failed step is in its action log)."""
    instance = Instance.objects.select_related("host").filter(pk=instance_id).first()
    if instance is None or instance.state != S.MIGRATING:
        return
    target = Host.objects.filter(pk=instance.pending.get("target")).first()
    from compute import migration  # it queues tasks, which import this module

    if target is not None and instance.pending.get("from_state") == S.RUNNING:
        there = instance_driver(instance, target).status(str(instance.pk))
        if there.power == "running" and instance_driver(instance).status(str(instance.pk)).power == "missing":
            # The guest already runs on the target: undoing would kill it. The operator
            # decides; the instance goes to error naming the step.
            log.error("live migration of %s failed after the guest moved to %s", instance.pk, target.name)
            return
    if not migration.undo_claims(instance_id):
        return
    if target is not None:
        try:
            there = instance_driver(instance, target)
            # A shared disk is the source's still: only the target's domain and entry go.
            (there.forget if instance.shared_disk else there.delete)(str(instance.pk), instance.mac_address)
            firewall.apply_host(target)
        except (HostError, TransientHostError, redis_locks.Busy) as exc:
            log.warning("leftovers of a failed migration of %s on %s: %s", instance.pk, target.name, exc)
    try:
        instance_driver(instance).delete_export(str(instance.pk))
    except (HostError, TransientHostError) as exc:
        log.warning("export of %s left on %s: %s", instance.pk, instance.host.name, exc)
    _settle(instance, S.MIGRATING, instance.pending.get("from_state", S.STOPPED))


def evacuate(instance_id) -> str:
    """Start an HA instance of a dead (and fenced) host on the host its evacuation claimed
    (compute.evacuation), from its disk on the segment's shared storage, at its own address.
    The instance's host is the new one already; the dead one's copy is removed when it returns."""
    instance = _load(instance_id, S.EVACUATING)
    if instance is None:
        return "skipped"
    drv = instance_driver(instance)
    uuid = str(instance.pk)
    with step(instance, "evacuate", "disk"):
        if not drv.has_disk(uuid):
            raise HostError(f"the disk of {uuid} is not in the shared pool of {instance.host.name}")
    with step(instance, "evacuate", "seed"):
        if instance.image.format != Image.Format.ISO:
            drv.ensure_seed(uuid, _seed(instance))
    with step(instance, "evacuate", "dhcp"):
        drv.ensure_dhcp(instance.mac_address, instance.ip_address, f"i-{instance.pk.hex}")
        _ensure_dns(instance)
    with step(instance, "evacuate", "firewall"):
        firewall.apply_host(instance.host)
    with step(instance, "evacuate", "define"):
        drv.ensure_defined(_spec(instance))
    if instance.pending.get("was") != S.RUNNING:
        _settle(instance, S.EVACUATING, S.STOPPED, power_state="shutoff", vnc_port=None)
        return "stopped"
    status = _start(instance, "evacuate")
    _settle(instance, S.EVACUATING, S.RUNNING, power_state=status.power, vnc_port=status.vnc_port)
    return "running"


def fail_snapshot_image(instance_id) -> None:
    instance = Instance.objects.filter(pk=instance_id).first()
    if instance and instance.pending.get("image"):
        Image.objects.filter(pk=instance.pending["image"], state=Image.State.PENDING).update(state=Image.State.ERROR)


def delete(instance_id) -> str:
    instance = _load(instance_id, S.DELETING)
    if instance is None:
        return "skipped"
    with step(instance, "delete", "destroy"):
        instance_driver(instance).delete(str(instance.pk), instance.mac_address)
    with transaction.atomic():
        lock_host(instance.host_id)
        # The conditional update makes the release happen exactly once, however often this runs.
        settled = _settle(
            instance, S.DELETING, S.DELETED, power_state="missing", vnc_port=None, deleted_at=timezone.now()
        )
        if not settled:
            return "skipped"
        scheduler.release(instance.host_id, Size.of_instance(instance))
        # The host's DHCP server remembers the guest's lease until it expires: the address
        # rests until then, or the next guest given it would be handed another one.
        IpAllocation.objects.filter(instance=instance).update(instance=None, released_at=timezone.now())
        # Its address leaves the groups other guests (on other hosts too) trust.
        firewall.queue_sync(instance.tenant_id, except_host=instance.host_id)
    try:
        firewall.apply_host(instance.host)  # its own filter goes, and this host's peers forget it
    except (HostError, TransientHostError, redis_locks.Busy) as exc:
        log.warning("filters of host %s not applied after deleting %s: %s", instance.host_id, instance.pk, exc)
    _forget_unused_images(instance)
    return "deleted"


def _forget_unused_images(instance: Instance) -> None:
    """A deleted image's volume goes from this host once its last instance here is gone."""
    image = Image.objects.filter(pk=instance.image_id, state=Image.State.DELETED).first()
    if image is None:
        return
    try:
        delete_image_volumes(str(image.pk), str(instance.host_id))
    except (HostError, TransientHostError) as exc:
        # The instance is gone either way; the hourly orphan report shows what stayed.
        log.warning("could not remove the volumes of deleted image %s: %s", image.pk, exc)


def delete_image_volumes(image_id, host_id) -> str:
    """Remove a deleted image's volumes from one host, unless a live instance there uses them
    (its disk is an overlay on them): then the last one's delete removes them."""
    image = Image.objects.filter(pk=image_id, state=Image.State.DELETED).first()
    host = Host.objects.filter(pk=host_id).first()
    if image is None or host is None:
        return "skipped"
    if Instance.objects.filter(host=host, image=image).exclude(state=S.DELETED).exists():
        return "in use"
    # A rescued instance boots an overlay of the rescue image (the orphan report shows what stays).
    if image.rescue and Instance.objects.filter(host=host, state__in=[S.RESCUING, S.RESCUE, S.UNRESCUING]).exists():
        return "in use"
    driver(host).delete_image(image_ref(image))
    return "deleted"
