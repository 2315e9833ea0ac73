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


# The best candidate and its claim in one statement: what candidate_hosts() and claim() do for
# the first host of the first round, written by hand since building those two ORM queries cost
# several times the round trips themselves. The order is the `host_free_memory_up` index's
# expression, so PostgreSQL walks that index and stops at the first host that fits. The UPDATE
# waits for a concurrent claim of the same host as claim()'s does, and re-checks the fit on the
# newest row version; when it no longer fits, nothing is claimed and place() falls back to the
# rounds below. No FOR UPDATE in the subquery: a row it locked and then found changed stays
# locked, so one statement could hold one host and wait for another (deadlocks, seen with 10
# concurrent creates on 2 hosts); the UPDATE locks only the row it changes.
_FITS = """
    {t}.vcpus_used <= {t}.vcpus_total * {t}.cpu_ratio - %(vcpus)s
    AND {t}.memory_mb_used <= {t}.memory_mb_total * {t}.ram_ratio - %(memory_mb)s
    AND {t}.disk_gb_used <= {t}.disk_gb_total * {t}.disk_ratio - %(disk_gb)s"""
_CLAIM_BEST = """
UPDATE compute_host AS claimed SET
    vcpus_used = claimed.vcpus_used + %(vcpus)s,
    memory_mb_used = claimed.memory_mb_used + %(memory_mb)s,
    disk_gb_used = claimed.disk_gb_used + %(disk_gb)s
WHERE claimed.id = (
    SELECT c.id FROM compute_host AS c
    WHERE c.status = %(up)s AND {fits}
      AND (c.heartbeat_asked_at IS NULL OR c.heartbeat_asked_at >= %(cutoff)s){narrow}
    ORDER BY ((c.memory_mb_total * c.ram_ratio) - c.memory_mb_used) {direction}, c.name
    LIMIT 1
) AND claimed.status = %(up)s AND {claimed_fits}
RETURNING claimed.*"""


def _claim_best(size: Size, image: Image, exclude, segment: str | None, shared: bool) -> Host | None:
    """The best host for the size, claimed; None when none fits or the best one was taken."""
    params = {
        "vcpus": size.vcpus,
        "memory_mb": size.memory_mb,
        "disk_gb": size.disk_gb,
        "up": Host.Status.UP,
        "cutoff": timezone.now() - timedelta(seconds=settings.HOST_DOWN_AFTER_SECONDS),
    }
    narrow = ""
    if image.host_id:
        narrow += " AND c.id = %(image_host)s"
        params["image_host"] = image.host_id
    if exclude:
        narrow += " AND NOT (c.id = ANY(%(exclude)s))"
        params["exclude"] = list(exclude)
    if segment is not None:
        narrow += " AND c.segment = %(segment)s"
        params["segment"] = segment
    if shared:
        narrow += " AND c.shared_pool <> ''"
    sql = _CLAIM_BEST.format(
        fits=_FITS.format(t="c"),
        claimed_fits=_FITS.format(t="claimed"),
        narrow=narrow,
        direction="ASC" if settings.SCHEDULER_WEIGHER == "pack" else "DESC",
    )
    # raw() maps the returned columns by name and applies the fields' converters (JSON, times).
    return next(iter(Host.objects.raw(sql, params)), None)


def place(size: Size, image: Image, *, exclude=(), segment: str | None = None, shared: bool = False) -> Host:
    """Claim room on the best host for the size (not one of `exclude`; of `segment` only, when
    given; with a shared pool, when `shared`: an HA instance's disk lives there); raises
    NoValidHost when none has it."""
    host = _claim_best(size, image, exclude, segment, shared)
    if host is not None:
        return host
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
