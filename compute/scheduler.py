"""Placement: filter the hosts that can take a size, weigh them, and claim one race-free.

A claim is a conditional UPDATE that adds the size to the host's used counters only if it
still fits after overcommit. PostgreSQL re-checks the WHERE clause on the newest row version
once it holds the row lock, so concurrent claims can never push a host past its capacity;
losers simply move on to the next candidate.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import ExpressionWrapper, F, IntegerField, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from compute.models import Host, Image
from compute.sizing import Size

CANDIDATES_PER_ROUND = 5
ROUNDS = 4


class NoValidHost(Exception):
    """No host has room for this size (or can run this image)."""


def _fits(size: Size) -> Q:
    return (
        Q(vcpus_used__lte=F("vcpus_total") * F("cpu_ratio") - size.vcpus)
        & Q(memory_mb_used__lte=F("memory_mb_total") * F("ram_ratio") - size.memory_mb)
        & Q(disk_gb_used__lte=F("disk_gb_total") * F("disk_ratio") - size.disk_gb)
    )


def _worker_answers() -> Q:
    """The host's worker has answered every heartbeat request older than HOST_DOWN_AFTER:
    a host whose worker is silent would leave new instances building for ever."""
    cutoff = timezone.now() - timedelta(seconds=settings.HOST_DOWN_AFTER_SECONDS)
    return Q(heartbeat_asked_at__isnull=True) | Q(heartbeat_asked_at__gte=cutoff)


def candidate_hosts(size: Size, image: Image) -> QuerySet[Host]:
    """Hosts that are up with a worker that answers, have room for the size, and can use the
    image, best first."""
    hosts = Host.objects.filter(_fits(size), _worker_answers(), status=Host.Status.UP)
    if image.host_id:
        hosts = hosts.filter(pk=image.host_id)
    free_memory = ExpressionWrapper(
        F("memory_mb_total") * F("ram_ratio") - F("memory_mb_used"), output_field=IntegerField()
    )
    hosts = hosts.annotate(free_memory=free_memory)
    if settings.SCHEDULER_WEIGHER == "pack":
        return hosts.order_by("free_memory", "name")
    return hosts.order_by("-free_memory", "name")


def claim(host_id, size: Size) -> bool:
    """Add the size to the host's claimed resources if it still fits; True when it did."""
    return (
        Host.objects.filter(_fits(size), pk=host_id, status=Host.Status.UP).update(
            vcpus_used=F("vcpus_used") + size.vcpus,
            memory_mb_used=F("memory_mb_used") + size.memory_mb,
            disk_gb_used=F("disk_gb_used") + size.disk_gb,
        )
        == 1
    )


def claim_delta(host_id, old: Size, new: Size) -> bool:
    """Grow (or shrink) an existing claim on the same host, as a resize does."""
    delta = Size(
        vcpus=new.vcpus - old.vcpus,
        memory_mb=new.memory_mb - old.memory_mb,
        disk_gb=new.disk_gb - old.disk_gb,
        bandwidth_mbit=0,
        traffic_gb=0,
        sla_percent=new.sla_percent,
    )
    return (
        Host.objects.filter(_fits(delta), pk=host_id).update(
            vcpus_used=F("vcpus_used") + delta.vcpus,
            memory_mb_used=F("memory_mb_used") + delta.memory_mb,
            disk_gb_used=F("disk_gb_used") + delta.disk_gb,
        )
        == 1
    )


def release(host_id, size: Size) -> None:
    Host.objects.filter(pk=host_id).update(
        vcpus_used=F("vcpus_used") - size.vcpus,
        memory_mb_used=F("memory_mb_used") - size.memory_mb,
        disk_gb_used=F("disk_gb_used") - size.disk_gb,
    )


def place(size: Size, image: Image, *, exclude=(), segment: str | None = None, shared: bool = False) -> Host:
    """Claim room on the best host for the size (not one of `exclude`; of `segment` only, when
    given; with a shared pool, when `shared`: an HA instance's disk lives there); raises
    NoValidHost when none has it."""
    for _round in range(ROUNDS):
        hosts = candidate_hosts(size, image).exclude(pk__in=list(exclude))
        if segment is not None:
            hosts = hosts.filter(segment=segment)
        if shared:
            hosts = hosts.exclude(shared_pool="")
        candidates = list(hosts[:CANDIDATES_PER_ROUND])
        if not candidates:
            break
        for host in candidates:
            if claim(host.pk, size):
                return host
    unavailable = Host.objects.filter(status=Host.Status.DOWN).count() + (
        Host.objects.filter(status=Host.Status.UP).exclude(_worker_answers()).count()
    )
    if unavailable:
        raise NoValidHost(
            _(
                "No host can take this instance right now: %(count)s host(s) are down or not answering, "
                "and the others have no room for this size. Try again later or choose a smaller size."
            )
            % {"count": unavailable}
        )
    raise NoValidHost(_("No host has room for this size right now."))
