"""Writes for instances, requested by the API, the UI and operators.

Each function is atomic, checks state under a row lock, records who asked in the action log,
and queues the worker's part on the host's own queue only after commit. Locks are taken in
one order everywhere: tenant quota -> host -> instance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache, partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from base import rows
from base.errors import Conflict, Invalid, NotPermitted, QuotaExceeded
from compute import cloudinit, dns, firewall, idempotency, leases, scheduler, security_groups, tasks
from compute.driver_refs import driver, instance_driver
from compute.drivers.base import GuestAgentUnavailable, HostError, TransientHostError
from compute.models import (
    CUSTOM_SIZE_FIELDS,
    Flavor,
    Host,
    Image,
    Instance,
    InstanceAction,
    InstanceState,
    InstanceTag,
    IpAllocation,
    IpPool,
)
from compute.row_locks import lock_bulk_creates, lock_instance, lock_quota
from compute.selectors import images_visible_filter, usage_and_taken
from compute.sizing import Size, custom_size_errors
from compute.transitions import TRANSITIONS, action_word, refusal, state_word
from tenants.access import Actor
from tenants.models import SshKey
from tenants.services import audit, audit_event

log = logging.getLogger(__name__)
TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,31}")
MAX_TAGS = 10
NAME_TAKEN = gettext_lazy("An instance with this name already exists in this tenant.")


@dataclass(frozen=True)
class CreateRequest:
    name: str
    image_id: str
    size: Size
    flavor_id: str | None
    ssh_key_ids: tuple[str, ...] = ()
    user_data: str = ""
    # The default user's password: the customer's own, or one made up here and shown once.
    # Only its SHA-512 crypt hash is kept, until the build has put it in the seed.
    password: str = ""
    generate_password: bool = False
    # The security groups it joins; None: the tenant's default group.
    security_group_ids: tuple[str, ...] | None = None
    # The row of `flavor_id`, when the caller has read it already (the API's validation has).
    flavor: Flavor | None = field(default=None, compare=False, repr=False)

    def fingerprint(self, *, count: int | None = None) -> str:
        """A hash of the request, for Idempotency-Key; `count` for a bulk create (a single
        create's fingerprint is what it always was, so keys stored before stay good)."""
        body = {
            "name": self.name,
            "image": str(self.image_id),
            "size": self.size.as_json(),
            "flavor": str(self.flavor_id or ""),
            "keys": sorted(map(str, self.ssh_key_ids)),
            "user_data": self.user_data,
            # Whether, not which: the fingerprint is stored, and a fast hash of a password is
            # as good as the password to whoever reads it.
            "password": bool(self.password),
            "generate_password": self.generate_password,
            "security_groups": None if self.security_group_ids is None else sorted(map(str, self.security_group_ids)),
        }
        if count is not None:
            body["count"] = count
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def mac_for(instance_id) -> str:
    """A locally administered unicast MAC from the instance UUID (40 bits of it)."""
    raw = instance_id.bytes[:5]
    return "02:" + ":".join(f"{b:02x}" for b in raw)


def record_action(instance: Instance, action: str, *, actor: Actor | None, **detail) -> InstanceAction:
    row = action_row(instance, action, actor=actor, **detail)
    row.save()
    return row


def action_row(instance: Instance, action: str, *, actor: Actor | None, **detail) -> InstanceAction:
    """The action log's row of a request, not written yet."""
    return InstanceAction(
        instance=instance,
        action=action,
        status=InstanceAction.Status.REQUESTED,
        user=actor.user if actor else None,
        token=actor.token if actor else None,
        detail=detail,
    )


def _enqueue(task, instance: Instance) -> None:
    """Queue `task` for the instance on its host's queue, once the transaction commits."""
    queue = instance.host.queue
    instance_id = str(instance.pk)
    transaction.on_commit(lambda: task.apply_async(args=[instance_id], queue=queue))


def _check_quota(actor: Actor, extra: Size, *, new_instances: int, names=(), labels=()) -> tuple[set, set]:
    """Lock the tenant's quota row and refuse if `extra` would pass any limit. Which of
    `names` and of the DNS `labels` the tenant's live instances hold, read with the usage."""
    quota = lock_quota(actor.tenant)
    used, names_taken, labels_taken = usage_and_taken(actor.tenant, names, labels)
    wanted = {
        "instances": new_instances,
        "vcpus": extra.vcpus,
        "memory_mb": extra.memory_mb,
        "disk_gb": extra.disk_gb,
    }
    for name, amount in wanted.items():
        limit = getattr(quota, name)
        if amount > 0 and used[name] + amount > limit:
            raise QuotaExceeded(name, in_use=used[name], requested=amount, limit=limit)
    return names_taken, labels_taken


def segment_pools(pool: IpPool, segment: str | None = None) -> list[int]:
    """The pools whose addresses are one address space with `pool`'s: those of every host of
    its host's segment (locked against a concurrent pick on another of them), or just itself.
    `segment`: the host's, when the caller has its row already."""
    if segment is None:
        segment = Host.objects.filter(pk=pool.host_id).values_list("segment", flat=True).first()
    if not segment:
        return [pool.pk]
    # Creates on two hosts of one segment lock different host rows: this serializes them.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"segment:{segment}"])
    return list(IpPool.objects.filter(host__segment=segment).values_list("pk", flat=True))


def _free_address(pool: IpPool, segment: str | None = None) -> str | None:
    """Lowest free address of the pool: held by no instance, and not resting after a delete
    (the host's DHCP server would still hand it to the old guest's MAC only). The caller holds
    its host's row lock (its claim updated the row), so two creates on one host never pick the
    same address; on a segment, every pool of it counts, under the segment's lock. A rested
    address's old row is cleared for the new allocation, in the same statement."""
    pools = segment_pools(pool, segment)
    if pools == [pool.pk]:
        reserved = [pool.gateway]
    else:
        reserved = list(IpPool.objects.filter(pk__in=pools).values_list("gateway", flat=True))
    rested = timezone.now() - timedelta(seconds=settings.IP_REST_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            _free_address_sql(),
            {"pools": pools, "reserved": reserved, "rested": rested, "first": pool.first, "last": pool.last},
        )
        row = cursor.fetchone()
    return row[0] if row else None


@cache
def _free_address_sql() -> str:
    """The lowest address in [first, last] that is not used (held, resting, or a gateway):
    the range's first address or the one after a used one, so PostgreSQL reads the pool's rows
    once and hands back one address instead of all of them."""
    table = connection.ops.quote_name(IpAllocation._meta.db_table)
    return f"""
        WITH used AS (
            SELECT address FROM {table}
            WHERE pool_id = ANY(%(pools)s) AND (instance_id IS NOT NULL OR released_at > %(rested)s)
            UNION SELECT unnest(%(reserved)s::inet[])
        ), pick AS (
            SELECT candidate AS address
            FROM (SELECT %(first)s::inet AS candidate UNION ALL SELECT address + 1 FROM used) AS candidates
            WHERE candidate BETWEEN %(first)s::inet AND %(last)s::inet
              AND candidate NOT IN (SELECT address FROM used)
            ORDER BY candidate LIMIT 1
        ), cleared AS (
            DELETE FROM {table} AS rested USING pick
            WHERE rested.pool_id = ANY(%(pools)s) AND rested.address = pick.address AND rested.instance_id IS NULL
        )
        SELECT host(address) FROM pick
    """  # noqa: S608 (the table's name from the model; every value a parameter)


# Hosts tried whose address pool turned out full, before a create is refused.
ADDRESS_TRIES = 5


def _place_with_address(size: Size, image: Image, *, shared: bool = False) -> tuple[Host, IpPool, str]:
    """A host claimed for the size that also has a free address: the host, its pool and the
    address. A host with room but a full pool gives its claim back; the next best is tried.
    `shared`: only hosts with a shared pool (an HA flavor)."""
    full = []
    for _try in range(ADDRESS_TRIES):
        try:
            host = scheduler.place(size, image, exclude=[h.pk for h in full], shared=shared)
        except scheduler.NoValidHost as exc:
            if not full:
                raise Conflict(str(exc)) from None
            break
        # A host without an address pool (made by hand in the admin) has no address to give.
        pool = IpPool.objects.filter(host=host).first()
        if pool is not None and (address := _free_address(pool, host.segment)):
            return host, pool, address
        scheduler.release(host.pk, size)
        full.append(host)
    names = ", ".join(h.name for h in full)
    if len(full) == 1:
        raise Conflict(_("Host %(names)s has no free IP address.") % {"names": names})
    raise Conflict(_("Hosts %(names)s have no free IP address, and no other host has room.") % {"names": names})


def _resolve_image(actor: Actor, image_id) -> Image:
    image = (
        Image.objects.filter(images_visible_filter(actor.tenant), pk=image_id, state=Image.State.ACTIVE).first()
        if _is_uuid(image_id)
        else None
    )
    if image is None:
        raise Invalid("image", _("Unknown image."))
    return image


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _check_custom_size(size: Size, flavor_id) -> None:
    """A size without a flavor must lie inside the operator's custom limits (the API's and the
    pages' forms say so first, field by field; this is the rule they show)."""
    if flavor_id is not None:
        return
    errors = custom_size_errors({name: getattr(size, name) for name in CUSTOM_SIZE_FIELDS})
    if errors:
        field, messages = next(iter(errors.items()))
        raise Invalid(field, messages[0])


def resolve_flavor(flavor_id) -> Flavor:
    flavor = Flavor.objects.filter(pk=flavor_id, active=True).first() if _is_uuid(flavor_id) else None
    if flavor is None:
        raise Invalid("flavor", _("Unknown or retired flavor."))
    return flavor


def _check_image_fits(image: Image, size: Size, field: str = "image") -> None:
    if size.disk_gb < image.min_disk_gb:
        raise Invalid(field, _("This image needs a disk of at least %(gb)s GiB.") % {"gb": image.min_disk_gb})
    if size.memory_mb < image.min_memory_mb:
        raise Invalid(field, _("This image needs at least %(mb)s MiB of memory.") % {"mb": image.min_memory_mb})


def instance_create(*, actor: Actor, request: CreateRequest, idempotency_key: str | None = None) -> Instance:
    """Reserve quota, claim a host, allocate an IP and queue the build; all or nothing.

    With an idempotency key, a repeated request returns the instance the first one made.
    """
    return _create(actor, request, [request.name], idempotency_key, request.fingerprint())[0]


def instances_create(
    *, actor: Actor, request: CreateRequest, count: int, idempotency_key: str | None = None
) -> list[Instance]:
    """`count` instances of one image and size, named from the pattern `request.name`
    (`web-{n}`: web-1, web-2, ...; `{n:02}` pads the number to two digits), in one
    transaction: the quota is checked once for all of them, and each is placed and given an
    address as `instance_create` does. If any one cannot be made, none is (their host claims
    and addresses roll back with the rest).

    With an idempotency key, a repeated request returns the instances the first one made."""
    names = names_from_pattern(request.name, count)
    return _create(actor, request, names, idempotency_key, request.fingerprint(count=count))


# `{n}`, or `{n:0W}` for the number zero-padded to W digits. Expanded by hand, never with
# str.format: the pattern is the customer's text.
NAME_NUMBER = re.compile(r"\{n(?::0([1-9]))?\}")
NAME_MAX = 255


def names_from_pattern(pattern: str, count: int) -> list[str]:
    """The names of `count` instances: the pattern with its `{n}` numbered 1 to count.
    Without a `{n}`, the pattern is the one instance's name."""
    if not 1 <= count <= settings.BULK_CREATE_MAX:
        raise Invalid("count", _("Make 1 to %(most)s instances at a time.") % {"most": settings.BULK_CREATE_MAX})
    if NAME_NUMBER.search(pattern) is None:
        if count > 1:
            raise Invalid("name", _("To make several instances, put {n} where the number goes, e.g. web-{n}."))
        return [pattern]
    names = [NAME_NUMBER.sub(lambda m, n=n: str(n).zfill(int(m.group(1) or 0)), pattern) for n in range(1, count + 1)]
    if max(map(len, names)) > NAME_MAX:
        raise Invalid("name", _("A name has at most %(most)s characters.") % {"most": NAME_MAX})
    return names


def _checked_create(actor: Actor, request: CreateRequest) -> tuple[Image, list[SshKey], list]:
    """What a create needs that is checked before any lock: its image, SSH keys and groups."""
    if not actor.tenant.is_active:
        raise Conflict(_("This tenant is suspended and cannot create instances."))
    if len(request.user_data.encode()) > settings.MAX_USER_DATA_BYTES:
        raise Invalid("user_data", _("user_data is over %(kib)s KiB.") % {"kib": settings.MAX_USER_DATA_BYTES // 1024})
    _check_custom_size(request.size, request.flavor_id)
    image = _resolve_image(actor, request.image_id)
    _check_image_fits(image, request.size)
    if request.password and request.generate_password:
        raise Invalid("password", _("Give a password, or ask for one to be generated, not both."))
    wants_password = bool(request.password or request.generate_password)
    if wants_password and image.format == Image.Format.ISO:
        raise Invalid("password", _("An install ISO sets its passwords itself, in the installer."))
    if request.password:
        check_password(request.password)
    keys = list(SshKey.objects.filter(tenant=actor.tenant, pk__in=[k for k in request.ssh_key_ids if _is_uuid(k)]))
    if len(keys) != len(set(map(str, request.ssh_key_ids))):
        raise Invalid("ssh_key_ids", _("Unknown SSH key."))
    groups = security_groups.groups_for_create(actor.tenant, request.security_group_ids)
    return image, keys, groups


def _check_names_free(names: list[str], taken: set[str]) -> None:
    """No live instance of the tenant has any of these names (`taken`: those that one has,
    read under the quota row lock)."""
    if not taken:
        return
    if len(names) == 1:
        raise Invalid("name", NAME_TAKEN)
    raise Invalid(
        "name",
        _("Instances with these names already exist in this tenant: %(names)s.")
        % {"names": ", ".join(name for name in names if name in taken)},
    )


def _create(
    actor: Actor, request: CreateRequest, names: list[str], idempotency_key: str | None, fingerprint: str
) -> list[Instance]:
    """One instance per name, in one transaction: all of them, or none."""
    image, keys, groups = _checked_create(actor, request)
    # An HA flavor's disks live on shared storage, where another host can start them (read
    # here, before the quota row is locked).
    flavor = request.flavor
    if flavor is None and request.flavor_id:
        flavor = Flavor.objects.filter(pk=request.flavor_id).first()
    shared = flavor is not None and flavor.ha
    passwords = _passwords(request, len(names))
    with transaction.atomic():
        key_row = None
        if idempotency_key:
            key_row, previous = idempotency.claim(actor.tenant, idempotency_key, fingerprint)
            if previous is not None:
                return previous
        names_taken, labels_taken = _check_quota(
            actor,
            request.size.times(len(names)),
            new_instances=len(names),
            names=names,
            labels=[dns.base_label(name) for name in names],
        )
        _check_names_free(names, names_taken)
        if len(names) > 1:
            lock_bulk_creates()
        # A host or an address missing for any one raises: the claims and rows of those made
        # before it roll back with the transaction.
        made = [
            _make_instance(actor, request, name, image, flavor, keys, groups, password, labels_taken, shared=shared)
            for name, password in zip(names, passwords, strict=True)
        ]
        idempotency.bind(key_row, made)
    return made


def _passwords(request: CreateRequest, count: int) -> list[tuple[str, str]]:
    """(password, its crypt hash) for each instance, or ("", ""): made before any lock is
    taken, since each hash takes a while (50,000 rounds of SHA-512)."""
    if not (request.password or request.generate_password):
        return [("", "")] * count
    plains = [cloudinit.generate_password() if request.generate_password else request.password for _ in range(count)]
    return [(plain, cloudinit.hash_password(plain)) for plain in plains]


def _make_instance(
    actor: Actor,
    request: CreateRequest,
    name: str,
    image: Image,
    flavor: Flavor | None,
    keys: list,
    groups: list,
    password: tuple[str, str],
    labels_taken: set[str],
    *,
    shared: bool,
) -> Instance:
    """Claim a host (`shared`: one with a shared pool) and an address for one instance, write
    its rows and queue its build on commit. The caller holds the tenant's quota row lock in an
    open transaction; `labels_taken`: the DNS labels its tenant's live instances hold (this
    one's is added)."""
    host, pool, address = _place_with_address(request.size, image, shared=shared)
    plain, password_hash = password
    instance = Instance(
        tenant=actor.tenant,
        name=name,
        image=image,
        iso=image if image.format == Image.Format.ISO else None,
        password_hash=password_hash,
        flavor_id=request.flavor_id,
        host=host,
        shared_disk=shared,
        user_data=request.user_data,
        ssh_keys=[key.public_key for key in keys],
        created_by=actor.user,
        **request.size.as_fields(),
    )
    if flavor is not None:
        instance.flavor = flavor  # the answer shows its name
    instance.mac_address = mac_for(instance.id)
    instance.ip_address = address
    instance.dns_label = dns.choose_label(instance, name, taken=labels_taken)
    labels_taken.add(instance.dns_label)  # the next of a bulk create sees it
    # Its rows in one round trip (the transaction holds the tenant's quota row lock, so its
    # length is how fast one tenant's creates go): the instance, its groups (none yet, so no
    # set(), which would read them first), its address, its action and audit records.
    groups_through = Instance.security_groups.through
    rows.insert_together(
        [
            instance,
            *(groups_through(instance=instance, securitygroup=group) for group in groups),
            IpAllocation(pool=pool, address=address, instance=instance),
            action_row(instance, "create", actor=actor, image=str(image.pk), size=request.size.as_json()),
            audit_event(actor, "instance.create", target=str(instance.pk), name=instance.name),
        ]
    )
    # Its group peers on other hosts learn its address; its own host applies its filters
    # in the build, before the guest first runs.
    firewall.queue_sync(actor.tenant.pk, except_host=host.pk)
    _enqueue(tasks.provision, instance)
    # As accepted, no step has run: its answer need not ask the action log.
    instance.steps_done = 0
    if request.generate_password:
        # Shown to the caller this once; an idempotent replay of the request does not have it.
        instance.generated_password = plain
    return instance


PASSWORD_LENGTH = (8, 128)


def check_password(password: str) -> None:
    low, high = PASSWORD_LENGTH
    if not low <= len(password) <= high:
        raise Invalid("password", _("A password has %(low)s to %(high)s characters.") % {"low": low, "high": high})
    if not password.isprintable():
        raise Invalid("password", _("A password has printable characters only."))


# Anything else could bring a suspended tenant's instance back to running.
ALLOWED_WHEN_SUSPENDED = {"stop", "delete"}


def _begin(actor: Actor | None, instance: Instance, action: str, **pending) -> Instance:
    """Move a locked instance into the action's in-flight state, or 409 naming why not."""
    locked = lock_instance(instance.pk)
    if reason := refusal(action, locked.state):
        raise Conflict(reason)
    if actor is not None and action not in ALLOWED_WHEN_SUSPENDED and not locked.tenant.is_active:
        raise Conflict(
            _("This tenant is suspended; its instances can only be stopped or deleted, not %(action)sed.")
            % {"action": action_word(action)}
        )
    locked.pending = {"from_state": locked.state, **pending}
    locked.state = TRANSITIONS[action][1]
    locked.error_step = ""
    locked.error_message = ""
    locked.save(update_fields=["state", "pending", "error_step", "error_message"])
    record_action(locked, action, actor=actor, **pending)
    if actor is not None:
        audit(actor, f"instance.{action}", target=str(locked.pk), name=locked.name)
    return locked


@transaction.atomic
def instance_start(*, actor: Actor | None, instance: Instance) -> Instance:
    if actor is not None and not actor.tenant.is_active:
        raise Conflict(_("This tenant is suspended; its instances cannot be started."))
    locked = _begin(actor, instance, "start")
    _enqueue(tasks.start, locked)
    return locked


@transaction.atomic
def instance_stop(*, actor: Actor | None, instance: Instance) -> Instance:
    locked = _begin(actor, instance, "stop")
    _enqueue(tasks.stop, locked)
    return locked


@transaction.atomic
def instance_reboot(*, actor: Actor, instance: Instance) -> Instance:
    locked = _begin(actor, instance, "reboot")
    _enqueue(tasks.reboot, locked)
    return locked


@transaction.atomic
def instance_resize(*, actor: Actor, instance: Instance, size: Size, flavor_id=None) -> Instance:
    """Change vCPUs, memory and disk (disks only grow). A running instance is stopped for
    the change and started again. The host must have room: there is no migration."""
    _check_custom_size(size, flavor_id)
    old = Size.of_instance(instance)
    if size.disk_gb < old.disk_gb:
        raise Invalid("disk_gb", _("Disks can only grow; this one is %(gb)s GiB.") % {"gb": old.disk_gb})
    if size == old:
        raise Invalid("size", _("The instance already has this size."))
    _check_image_fits(instance.image, size, field="size")
    growth = Size(
        vcpus=max(size.vcpus - old.vcpus, 0),
        memory_mb=max(size.memory_mb - old.memory_mb, 0),
        disk_gb=max(size.disk_gb - old.disk_gb, 0),
        bandwidth_mbit=0,
        traffic_gb=0,
        sla_percent=size.sla_percent,
    )
    _check_quota(actor, growth, new_instances=0)
    current = Instance.objects.get(pk=instance.pk)
    if reason := refusal("resize", current.state):
        raise Conflict(reason)
    if not scheduler.claim_delta(current.host_id, old, size):
        raise Conflict(_("The instance's host has no room for this size."))
    locked = _begin(
        actor,
        instance,
        "resize",
        size=size.as_json(),
        old_size=old.as_json(),
        flavor=str(flavor_id) if flavor_id else None,
    )
    _enqueue(tasks.resize, locked)
    return locked


@transaction.atomic
def instance_rebuild(*, actor: Actor, instance: Instance, image_id) -> Instance:
    image = _resolve_image(actor, image_id)
    _check_image_fits(image, Size.of_instance(instance))
    if image.host_id and image.host_id != instance.host_id:
        raise Invalid("image", _("This snapshot lives on another host than the instance."))
    locked = _begin(actor, instance, "rebuild", image=str(image.pk))
    _enqueue(tasks.rebuild, locked)
    return locked


@transaction.atomic
def instance_snapshot(*, actor: Actor, instance: Instance, name: str) -> tuple[Instance, Image]:
    current = Instance.objects.select_related("image").get(pk=instance.pk)
    if reason := refusal("snapshot", current.state):
        raise Conflict(reason)
    name = _image_name(current.tenant, name)
    image = Image.objects.create(
        name=name,
        os_family=current.image.os_family,
        os_version=current.image.os_version,
        format=Image.Format.QCOW2,
        min_disk_gb=current.disk_gb,
        min_memory_mb=current.image.min_memory_mb,
        visibility=Image.Visibility.PRIVATE,
        tenant=current.tenant,
        state=Image.State.PENDING,
        host=current.host,
        source_instance=current,
    )
    locked = _begin(actor, instance, "snapshot", image=str(image.pk))
    _enqueue(tasks.snapshot, locked)
    return locked, image


@transaction.atomic
def instance_detach_iso(*, actor: Actor, instance: Instance) -> Instance:
    """Take the install CD out: the guest boots from its disk from now on."""
    current = Instance.objects.get(pk=instance.pk)
    if reason := refusal("detach_iso", current.state):
        raise Conflict(reason)
    if not current.iso_id:
        raise Conflict(_("No ISO is attached to this instance."))
    locked = _begin(actor, instance, "detach_iso", iso=str(current.iso_id))
    _enqueue(tasks.detach_iso, locked)
    return locked


def rescue_image() -> Image | None:
    """The rescue system an operator chose (the newest, if several are marked)."""
    return (
        Image.objects.filter(rescue=True, state=Image.State.ACTIVE, visibility=Image.Visibility.PUBLIC)
        .exclude(format=Image.Format.ISO)
        .order_by("-created_at")
        .first()
    )


@transaction.atomic
def instance_rescue(*, actor: Actor, instance: Instance) -> Instance:
    """Boot the rescue system with the instance's disk as its second disk (a running instance
    is stopped first), so a customer locked out of the guest can repair it from the console."""
    image = rescue_image()
    if image is None:
        raise Conflict(_("Rescue is not offered here: no operator has chosen a rescue image."))
    if instance.memory_mb < image.min_memory_mb:
        raise Conflict(
            _("The rescue system needs %(mb)s MiB of memory; this instance has less.") % {"mb": image.min_memory_mb}
        )
    locked = _begin(actor, instance, "rescue", rescue_image=str(image.pk))
    _enqueue(tasks.rescue, locked)
    return locked


@transaction.atomic
def instance_unrescue(*, actor: Actor, instance: Instance) -> Instance:
    locked = _begin(actor, instance, "unrescue")
    _enqueue(tasks.unrescue, locked)
    return locked


USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def instance_reset_password(*, actor: Actor, instance: Instance, username: str, password: str = "") -> str | None:
    """Set a user's password in the running guest through its guest agent, as a hash (the
    plain text goes nowhere). Returns the password when it was generated here (shown once).

    Done while the caller waits, holding the instance's lease so that no action runs at once;
    a guest with no agent answering is a Conflict that says so plainly."""
    if not USERNAME.fullmatch(username):
        raise Invalid("username", _("A user name of the guest: a-z, 0-9, _ and -, at most 32."))
    if password:
        check_password(password)
    current = Instance.objects.select_related("host", "tenant").get(pk=instance.pk)
    if current.state != InstanceState.RUNNING:
        raise Conflict(
            _("A password can be reset only while the instance runs; it is %(state)s.")
            % {"state": state_word(current.state)}
        )
    plain = password or cloudinit.generate_password()
    hashed = cloudinit.hash_password(plain)
    lease = leases.Lease(leases.instance_key(current.pk))
    if not lease.acquire():
        raise Conflict(_("Another action is under way on this instance; try again in a moment."))
    try:
        if not Instance.objects.filter(pk=current.pk, state=InstanceState.RUNNING).exists():
            raise Conflict(_("The instance stopped running; its password was not reset."))
        row = InstanceAction.objects.create(
            instance=current,
            action="reset_password",
            step="agent",
            status=InstanceAction.Status.RUNNING,
            user=actor.user,
            token=actor.token,
            detail={"username": username},
        )
        try:
            driver(current.host).set_user_password(str(current.pk), username, hashed)
        except (HostError, TransientHostError) as exc:
            InstanceAction.objects.filter(pk=row.pk).update(status=InstanceAction.Status.FAILED, error=str(exc)[:2000])
            if isinstance(exc, GuestAgentUnavailable):
                raise Conflict(
                    _(
                        "Password reset is unavailable for this instance: no guest agent answers in it "
                        "(%(error)s). It works in images that run qemu-guest-agent; otherwise use rescue mode."
                    )
                    % {"error": exc}
                ) from None
            raise Conflict(
                _("The instance's host could not reset the password now: %(error)s") % {"error": exc}
            ) from None
        InstanceAction.objects.filter(pk=row.pk).update(status=InstanceAction.Status.DONE)
    finally:
        lease.release()
    audit(actor, "instance.reset_password", target=str(current.pk), name=current.name, username=username)
    return None if password else plain


def console_log(*, instance: Instance, max_bytes: int) -> bytes:
    """The tail of the guest's serial console log, read from its host through libvirt."""
    current = Instance.objects.select_related("host").get(pk=instance.pk)
    if current.state == InstanceState.DELETED:
        return b""
    try:
        return instance_driver(current).console_log(str(current.pk), max_bytes)
    except (HostError, TransientHostError) as exc:
        raise Conflict(
            _("The console log cannot be read from the instance's host now: %(error)s") % {"error": exc}
        ) from None


@transaction.atomic
def instance_delete(*, actor: Actor | None, instance: Instance) -> Instance:
    locked = _begin(actor, instance, "delete")
    # A task still working on the instance (a build, say) stops at its next step.
    transaction.on_commit(partial(leases.mark_deleting, str(locked.pk)))
    _enqueue(tasks.delete, locked)
    return locked


@transaction.atomic
def instance_retry(*, actor: Actor | None, instance: Instance) -> Instance:
    """Operator action: bring an instance in ERROR back to running by the build's steps, all
    idempotent. Nothing is wiped: an existing disk is kept as it is, and only what is missing
    (base image, disk, seed, DHCP entry, domain) is made again before the guest is started."""
    locked = lock_instance(instance.pk)
    if locked.state != InstanceState.ERROR:
        raise Conflict(
            _("Only an instance in error can be retried; this one is %(state)s.") % {"state": state_word(locked.state)}
        )
    locked.state = InstanceState.BUILDING
    locked.error_step = ""
    locked.error_message = ""
    locked.save(update_fields=["state", "error_step", "error_message"])
    record_action(locked, "retry", actor=actor)
    _enqueue(tasks.provision, locked)
    return locked


# -- rename and tags ---------------------------------------------------------------------------


def instance_rename(*, actor, instance: Instance, name: str) -> Instance:
    """Give a live instance another name, unique among the tenant's live instances."""
    name = name.strip()
    if not name or "\x00" in name or len(name) > 255:
        raise Invalid("name", _("Give a name of 1 to 255 characters."))
    try:
        with transaction.atomic():
            lock_quota(instance.tenant)  # DNS labels are chosen under it (compute.dns)
            locked = lock_instance(instance.pk)
            if locked.state == InstanceState.DELETED:
                raise Invalid("name", _("A deleted instance cannot be renamed."))
            if locked.name == name:
                return locked
            live = Instance.objects.filter(tenant=locked.tenant_id).exclude(state=InstanceState.DELETED)
            if live.filter(name=name).exclude(pk=locked.pk).exists():
                raise Invalid("name", NAME_TAKEN)
            previous, locked.name = locked.name, name
            locked.dns_label = dns.choose_label(locked, name)
            locked.save(update_fields=["name", "dns_label"])
            audit(actor, "instance.rename", target=str(locked.pk), name=name, previous=previous)
            if locked.state != InstanceState.DELETING:
                host_queue, instance_id = locked.host.queue, str(locked.pk)
                transaction.on_commit(lambda: tasks.refresh_dns.apply_async(args=[instance_id], queue=host_queue))
    except IntegrityError:  # a create or rename that took the name meanwhile
        raise Invalid("name", NAME_TAKEN) from None
    return locked


def instance_set_tags(*, actor, instance: Instance, tags: list[str]) -> list[str]:
    """Replace the instance's tags: up to MAX_TAGS, each lower case letters, digits and - _ . :"""
    wanted = sorted({tag.strip().lower() for tag in tags if tag.strip()})
    for tag in wanted:
        if not TAG_PATTERN.fullmatch(tag):
            raise Invalid(
                "tags",
                _("A tag is 1 to 32 letters, digits, '-', '_', '.' or ':' (not %(tag)s).") % {"tag": repr(tag[:40])},
            )
    if len(wanted) > MAX_TAGS:
        raise Invalid("tags", _("At most %(count)s tags.") % {"count": MAX_TAGS})
    with transaction.atomic():
        locked = lock_instance(instance.pk)
        current = set(locked.tags.values_list("name", flat=True))
        if current == set(wanted):
            return wanted
        locked.tags.exclude(name__in=wanted).delete()
        InstanceTag.objects.bulk_create([InstanceTag(instance=locked, name=t) for t in wanted if t not in current])
        audit(actor, "instance.tags", target=str(locked.pk), name=locked.name, tags=wanted)
    return wanted


def instance_throttle(*, instance: Instance, kbytes: int | None, reason: str) -> bool:
    """Cap the guest's interface at `kbytes` KiB/s, or (None) give it its size's rate again,
    live, and log it on the instance. False when the host refused: the caller tries again on
    its next cycle, and one guest's host must not hold up the others'."""
    on = kbytes is not None
    rate = kbytes if on else (instance.bandwidth_mbit * 1000 // 8 if instance.host.shaping else None)
    try:
        live = driver(instance.host).set_bandwidth(str(instance.pk), instance.mac_address, rate)
    except (HostError, TransientHostError) as exc:
        log.warning("cannot %s %s: %s", "throttle" if on else "unthrottle", instance.pk, exc)
        return False
    Instance.objects.filter(pk=instance.pk).update(throttled=on, throttle_kbytes=rate if on else None)
    InstanceAction.objects.create(
        instance=instance,
        action="throttle" if on else "unthrottle",
        step="bandwidth",
        status=InstanceAction.Status.DONE,
        detail={"reason": reason, "live": live},
    )
    return True


# -- the tenant's images (snapshots) ----------------------------------------------------------
IMAGE_NAME_TAKEN = gettext_lazy("Your tenant already has an image or snapshot with this name.")


def _image_name(tenant, name: str, *, other_than=None) -> str:
    """A snapshot's name, trimmed: 1 to 255 characters, unique among the tenant's live images."""
    name = name.strip()
    if not name or "\x00" in name or len(name) > 255:
        raise Invalid("name", _("Give a name of 1 to 255 characters."))
    live = Image.objects.filter(tenant=tenant, name=name).exclude(state=Image.State.DELETED)
    if live.exclude(pk=other_than).exists():
        raise Invalid("name", IMAGE_NAME_TAKEN)
    return name


@transaction.atomic
def image_rename(*, actor: Actor, image: Image, name: str) -> Image:
    """Rename one of the tenant's own snapshots (public images are the operators')."""
    locked = Image.objects.select_for_update().get(pk=image.pk)
    if locked.tenant_id != actor.tenant.pk:
        raise NotPermitted(_("Public images are managed by operators."))
    if locked.state == Image.State.DELETED:
        raise Conflict(_("A deleted image cannot be renamed."))
    name = _image_name(actor.tenant, name, other_than=locked.pk)
    if name != locked.name:
        previous, locked.name = locked.name, name
        locked.save(update_fields=["name"])
        audit(actor, "image.rename", target=str(locked.pk), name=name, previous=previous)
    return locked
