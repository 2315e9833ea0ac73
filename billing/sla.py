"""Availability per instance and month, from what was recorded, and the credit it earns.

An instance is meant to run from the moment it settled into running until its tenant stopped
or deleted it (a guest powering itself off counts as the tenant's doing). Downtime is the part
of that time in which it was in error through no action of the tenant, or its host was down
(its own host_down state, which it keeps until its host returns or it runs on another host:
an outage is counted once, whichever host it ends up on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.models import SlaTier
from compute.models import Host, HostStatusLog, Instance, InstanceState, InstanceStateLog

S = InstanceState


@dataclass(frozen=True)
class Availability:
    percent: Decimal
    meant_seconds: int
    downtime_seconds: int


def _host_down_at(host_logs: list, moment: datetime, initial: str) -> bool:
    status = initial
    for row in host_logs:
        if row.at > moment:
            break
        status = row.status
    return status == Host.Status.DOWN


def availability(instance: Instance, start: datetime, end: datetime) -> Availability:
    state_logs = list(InstanceStateLog.objects.filter(instance=instance, at__lt=end).order_by("at", "id"))
    host_logs = list(HostStatusLog.objects.filter(host_id=instance.host_id, at__lt=end).order_by("at", "id"))
    # Every moment at which something relevant changed splits the month into pieces that are
    # uniformly up, down, or not meant to run.
    points = sorted(
        {
            start,
            end,
            *[r.at for r in state_logs if start < r.at < end],
            *[r.at for r in host_logs if start < r.at < end],
        }
    )
    meant = downtime = 0
    for lo, hi in zip(points, points[1:], strict=False):
        state, cause, meant_now = _state_at(state_logs, lo)
        if not meant_now:
            continue
        seconds = int((hi - lo).total_seconds())
        meant += seconds
        failed = (state == S.ERROR and cause == "system") or state == S.HOST_DOWN
        if failed or (state == S.RUNNING and _host_down_at(host_logs, lo, Host.Status.UP)):
            downtime += seconds
    percent = Decimal(100) if meant == 0 else (Decimal(100) * (meant - downtime) / meant).quantize(Decimal("0.0001"))
    return Availability(percent, meant, downtime)


def _state_at(logs: list, moment: datetime) -> tuple[str, str, bool]:
    """(state, cause, meant to run) at a moment, replaying the log up to it."""
    state, cause, meant = "", "", False
    for row in logs:
        if row.at > moment:
            break
        state, cause = row.state, row.cause
        if row.state == S.RUNNING:
            meant = True
        elif row.state in (S.STOPPED, S.DELETED) or (row.state == S.ERROR and row.cause != "system"):
            meant = False
    return state, cause, meant


def credit_percent(sla_percent: Decimal, measured: Decimal) -> Decimal:
    """The largest credit among the tiers of this SLA level whose threshold was missed."""
    tiers = SlaTier.objects.filter(sla_percent=sla_percent, below__gt=measured)
    return max((t.credit_percent for t in tiers), default=Decimal(0))
