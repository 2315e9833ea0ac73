"""Metering: counters from libvirt, growth per sample, and the monthly traffic allowance.

`collect` asks the host once (getAllDomainStats) for every domain's counters. `ingest` stores
one sample per instance and moment, with its growth since the previous sample: a counter that
went down was reset (the QEMU process restarted), so the growth is the new value, never
negative; a sample already stored for that moment, or a later one, is skipped, so neither a
rerun nor a delayed collection counts twice.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import OuterRef, Subquery, Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from base import units
from billing import prices
from billing.models import MeterSample, OverPolicy, TrafficNotice
from billing.money import GIB
from compute import hosts as compute_hosts
from compute import services as compute_services
from compute.drivers.base import DomainStats
from compute.models import Host, Instance, InstanceState
from compute.row_locks import lock_host
from tenants.notices import languages_of

log = logging.getLogger(__name__)
NOTICE_LEVELS = (80, 100)


def collect(host: Host) -> list[DomainStats]:
    return compute_hosts.host_counters(host)


def _growth(now: int, before: int | None) -> int:
    # A domain's counters start at zero when it starts, so a first sample, or one after a
    # reset (the counter went down), grew by its whole value.
    if before is None or now < before:
        return now
    return now - before


@transaction.atomic
def ingest(*, host: Host, taken_at: datetime, stats: list[DomainStats]) -> int:
    """Store the samples of one collection; returns how many were new."""
    by_uuid = {s.uuid: s for s in stats}
    # One ingest per host at a time, so each sees the samples of the one before it.
    lock_host(host.pk)
    live = Instance.objects.filter(host=host, pk__in=list(by_uuid)).exclude(state=InstanceState.DELETED)
    # Per instance: its newest sample, and its latest one before this moment, both read from
    # the (instance, taken_at) index. (A `taken_at >= moment` filter over the host's instances
    # let PostgreSQL pick the taken_at index, estimated at one row past its statistics, and
    # read every sample of this minute stored so far: each host's ingest grew slower as the
    # minute went on, quadratic in the fleet; docs/performance.md, "Fleet".)
    newest = MeterSample.objects.filter(instance=OuterRef("pk")).order_by("-taken_at")
    latest = MeterSample.objects.filter(instance=OuterRef("pk"), taken_at__lt=taken_at).order_by("-taken_at")
    rows = live.annotate(newest=Subquery(newest.values("taken_at")[:1]), head=Subquery(latest.values("id")[:1]))
    heads, already = {}, set()
    for pk, newest_at, head in rows.values_list("pk", "newest", "head"):
        heads[pk] = head
        # Stored already, or a delayed collection older than a stored sample, whose growth
        # that sample already holds: storing it would count the growth twice.
        if newest_at is not None and newest_at >= taken_at:
            already.add(pk)
    previous = {m.instance_id: m for m in MeterSample.objects.filter(pk__in=[h for h in heads.values() if h])}
    samples = []
    for instance_id in heads:
        if instance_id in already:
            continue
        s, before = by_uuid[str(instance_id)], previous.get(instance_id)
        samples.append(
            MeterSample(
                instance_id=instance_id,
                taken_at=taken_at,
                cpu_time_ns=s.cpu_time_ns,
                rx_bytes=s.rx_bytes,
                tx_bytes=s.tx_bytes,
                disk_bytes=s.disk_allocation_bytes,
                cpu_ns_delta=_growth(s.cpu_time_ns, before.cpu_time_ns if before else None),
                rx_delta=_growth(s.rx_bytes, before.rx_bytes if before else None),
                tx_delta=_growth(s.tx_bytes, before.tx_bytes if before else None),
            )
        )
    # A concurrent run of the same collection loses quietly on the unique constraint.
    MeterSample.objects.bulk_create(samples, ignore_conflicts=True)
    return len(samples)


def sample_before_move(sender, *, host: Host, stats: DomainStats, **kwargs) -> None:
    """The last reading of a guest's counters on the host it leaves: what it sent since the
    previous sample would be lost with the old QEMU (a live migration; compute.signals)."""
    ingest(host=host, taken_at=timezone.now(), stats=[stats])


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def traffic_this_month(instance_ids: list, now: datetime) -> dict:
    """Outbound bytes (what the guest sent) per instance since the month began."""
    rows = (
        MeterSample.objects.filter(instance_id__in=instance_ids, taken_at__gte=month_start(now), taken_at__lte=now)
        .values("instance_id")
        .annotate(tx=Sum("tx_delta"))
    )
    return {row["instance_id"]: int(row["tx"] or 0) for row in rows}


def allowance_bytes(instance: Instance) -> int:
    return instance.traffic_gb * GIB


def enforce_allowances(*, host: Host, now: datetime) -> dict[str, list[str]]:
    """Apply each instance's over-allowance policy, send the 80% and 100% notices, and lift
    throttles once a new month has begun. Runs right after metering, so it acts within a
    metering cycle of the crossing."""
    report: dict[str, list[str]] = {"throttled": [], "restored": [], "notified": [], "failed": []}
    instances = list(Instance.objects.filter(host=host).exclude(state=InstanceState.DELETED).select_related("tenant"))
    used = traffic_this_month([i.pk for i in instances], now)
    period = month_start(now).date()
    for instance in instances:
        allowance = allowance_bytes(instance)
        percent = Decimal(100) * used.get(instance.pk, 0) / allowance if allowance else Decimal(0)
        for level in NOTICE_LEVELS:
            if allowance and percent >= level and _notify(instance, period, level, used.get(instance.pk, 0)):
                report["notified"].append(f"{instance.pk}:{level}")
        over = allowance and percent >= 100
        policy = prices.over_policy(instance)
        if over and policy == OverPolicy.THROTTLE and not instance.throttled:
            if instance.state == InstanceState.RUNNING:
                done = _throttle(instance, on=True)
                report["throttled" if done else "failed"].append(str(instance.pk))
        elif instance.throttled and not over:
            done = _throttle(instance, on=False)
            report["restored" if done else "failed"].append(str(instance.pk))
    return report


def _throttle(instance: Instance, *, on: bool) -> bool:
    """Throttle to the price list's rate, or lift it; False (to be tried next cycle) if the host refused."""
    if on:
        return compute_services.instance_throttle(
            instance=instance, kbytes=prices.throttle_kbytes(), reason="monthly traffic allowance used up"
        )
    return compute_services.instance_throttle(instance=instance, kbytes=None, reason="new allowance period")


def _traffic_mail(instance: Instance, level: int, used: int) -> tuple[str, str]:
    """The subject and body of a traffic notice, in the active language."""
    throttled = prices.over_policy(instance) == OverPolicy.THROTTLE
    after = _("throttled") if throttled else _("billed per GiB")
    one_line = " ".join(instance.name.split())  # a header with a line break is refused
    subject = _("Instance %(name)s: %(level)s%% of its monthly traffic used") % {"name": one_line, "level": level}
    body = _(
        "Your instance %(name)s (%(address)s) has sent %(used)s this month, %(level)s%% of its "
        "%(allowance)s allowance.\nOver the allowance it is %(after)s until the next month begins."
    ) % {
        "name": instance.name,
        "address": instance.ip_address,
        "used": units.filesize(used),
        "level": level,
        "allowance": units.gib(instance.traffic_gb),
        "after": after,
    }
    footer = f"--\n{settings.PORTAL_NAME} · {settings.PORTAL_BASE_URL}\n"
    return f"[{settings.PORTAL_NAME}] {subject}", f"{body}\n\n{footer}"


def _notify(instance: Instance, period: date, level: int, used: int) -> bool:
    """Send the notice for this level once per instance and month; True if sent now."""
    try:
        # The notice is recorded only with its mail sent: a mail server that is down leaves it
        # for the next cycle instead of losing it.
        with transaction.atomic():
            notice, created = TrafficNotice.objects.get_or_create(instance=instance, period=period, level=level)
            if not created:
                return False
            recipient = instance.tenant.billing_email
            if recipient:
                # In the language of the account with that address, else the tenant's.
                (language,) = languages_of([recipient], instance.tenant.mail_language)
                with translation.override(language):
                    subject, body = _traffic_mail(instance, level, used)
                send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [recipient])
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("cannot send the %s%% traffic notice of %s: %s", level, instance.pk, exc)
        return False
    return True


def meter(host: Host, now: datetime | None = None) -> dict:
    """One metering cycle of a host: collect, ingest, enforce."""
    now = now or timezone.now().replace(microsecond=0)
    new = ingest(host=host, taken_at=now, stats=collect(host))
    report = enforce_allowances(host=host, now=now)
    return {"samples": new, **report}
