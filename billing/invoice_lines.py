"""What goes on a tenant's invoice for a month: usage lines, last month's SLA credits, the
credit the last invoice carried forward, and the line that carries a surplus of credit on."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Q

from billing import prices as price_lookup
from billing import rating, sla, usage
from billing.models import Invoice, InvoiceLine
from billing.money import ZERO, cents
from billing.periods import month_bounds, previous_month
from compute.models import HostStatusLog, Instance, InstanceStateLog

K = InvoiceLine.Kind


def _rate(stored: dict, *, start: datetime, end: datetime) -> dict:
    """tenant id -> priced lines, from usage.stored_usage (instances in id order)."""
    prices = price_lookup.price_list()
    flavors = price_lookup.flavors_by_id()
    instances = Instance.objects.only("id", "tenant_id", "name", "flavor_id", "traffic_gb").in_bulk(list(stored))
    period_seconds = int((end - start).total_seconds())
    lines = defaultdict(list)
    for instance_id in sorted(stored, key=str):
        month = stored[instance_id]
        lines[month.tenant_id] += rating.rate_instance(
            instance=instances[instance_id],
            sizes=month.sizes,
            tx_bytes=month.tx_bytes,
            period_seconds=period_seconds,
            prices=prices,
            flavors=flavors,
        )
    return lines


def month_lines(*, period: date, tenant_ids=None) -> dict:
    """tenant id -> the usage lines of its month, from the stored hourly usage."""
    start, end = month_bounds(period)
    return _rate(usage.stored_usage(start=start, end=end, tenant_ids=tenant_ids), start=start, end=end)


def sla_credit_lines(*, period: date, tenant_ids=None) -> dict:
    """tenant id -> credits earned in `period`, as negative lines (they go on the following
    invoice)."""
    start, end = month_bounds(period)
    # Only instances with recorded trouble can have lost availability (read once per run).
    troubled_hosts, failed = price_lookup.remember(("sla-trouble", end), lambda: _trouble_before(end))
    candidates = (
        Instance.objects.filter(created_at__lt=end)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gte=start))
        .filter(Q(host_id__in=troubled_hosts) | Q(pk__in=failed))
    )
    if tenant_ids is not None:
        candidates = candidates.filter(tenant_id__in=tenant_ids)
    earned = []
    for instance in candidates.order_by("created_at", "id"):
        measured = sla.availability(instance, start, end)
        if percent := sla.credit_percent(instance.sla_percent, measured.percent):
            earned.append((instance, measured, percent))
    if not earned:
        return {}
    stored = usage.stored_usage(start=start, end=end, instance_ids=[instance.pk for instance, _m, _p in earned])
    charged = defaultdict(lambda: ZERO)
    for tenant_lines in _rate(stored, start=start, end=end).values():
        for line in tenant_lines:
            if line.kind != K.OVERAGE:
                charged[line.instance_id] += line.amount
    lines = defaultdict(list)
    for instance, measured, percent in earned:
        base = charged[instance.pk]
        if not base:
            continue
        credit = cents(base * percent / 100)
        lines[instance.tenant_id].append(
            rating.Line(
                kind=K.SLA_CREDIT,
                description=f"{instance.name}: SLA credit {percent}% for {period:%B %Y} "
                f"(availability {measured.percent}%, {measured.downtime_seconds} s down)",
                quantity=percent,
                unit="percent",
                unit_price=-base / 100,
                amount=-credit,
                instance_id=instance.pk,
                detail={
                    "month": f"{period:%Y-%m}",
                    "availability": str(measured.percent),
                    "sla": str(instance.sla_percent),
                    "downtime_seconds": measured.downtime_seconds,
                    "meant_seconds": measured.meant_seconds,
                    "credited_of": str(base),
                },
            )
        )
    return lines


def _trouble_before(end: datetime) -> tuple[set, set]:
    hosts = set(HostStatusLog.objects.filter(at__lt=end, status="down").values_list("host_id", flat=True))
    failed = set(
        InstanceStateLog.objects.filter(at__lt=end, state="error", cause="system").values_list("instance_id", flat=True)
    )
    return hosts, failed


def carried_in_lines(*, period: date, tenant_ids=None) -> dict:
    """tenant id -> the credit its invoice for the month before `period` carried forward."""
    carried = InvoiceLine.objects.filter(invoice__period=previous_month(period), kind=K.CARRIED_OUT).exclude(
        invoice__state=Invoice.State.VOID
    )
    if tenant_ids is not None:
        carried = carried.filter(invoice__tenant_id__in=tenant_ids)
    lines = defaultdict(list)
    for tenant_id, number, amount in carried.values_list("invoice__tenant_id", "invoice__number", "amount"):
        source = f"invoice {number}" if number else f"{previous_month(period):%B %Y}"
        lines[tenant_id].append(
            rating.Line(
                kind=K.CARRIED_IN,
                description=f"Credit carried from {source}",
                quantity=Decimal(1),
                unit="credit",
                unit_price=-amount,
                amount=-amount,
                instance_id=None,
                detail={"from_invoice": number},
            )
        )
    return lines


def bills(*, period: date, tenant_ids=None) -> dict:
    """tenant id -> every line of its invoice for `period`: usage, then last month's SLA
    credits, then the credit the last invoice carried forward."""
    lines = month_lines(period=period, tenant_ids=tenant_ids)
    for source in (
        sla_credit_lines(period=previous_month(period), tenant_ids=tenant_ids),
        carried_in_lines(period=period, tenant_ids=tenant_ids),
    ):
        for tenant_id, extra in source.items():
            lines[tenant_id] += extra
    return lines


def carry_out(lines: list, period: date) -> list:
    """`lines`, plus a line carrying the rest forward when the credits exceed the charges."""
    subtotal = sum((line.amount for line in lines), ZERO)
    if subtotal >= 0:
        return lines
    _start, following = month_bounds(period)
    rest = -subtotal
    carried = rating.Line(
        kind=K.CARRIED_OUT,
        description=f"Credit carried to {following:%B %Y}",
        quantity=Decimal(1),
        unit="credit",
        unit_price=rest,
        amount=rest,
    )
    return [*lines, carried]
