"""Usage into priced lines. Every amount is exact until its line is final (billing.money)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from billing import prices as price_lookup
from billing.models import InvoiceLine, OverPolicy, PriceList, StoppedPolicy
from billing.money import GIB, ZERO, cents
from compute.models import Flavor, Instance

K = InvoiceLine.Kind
SIX = Decimal("0.000001")


@dataclass(kw_only=True)
class Line:
    kind: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    instance_id: object = None
    detail: dict = field(default_factory=dict)


def _hours(seconds: int) -> Decimal:
    return (Decimal(seconds) / 3600).quantize(SIX)


def rate_instance(
    *, instance: Instance, sizes: dict, tx_bytes: int, period_seconds: int, prices: PriceList, flavors: dict
) -> list[Line]:
    """The lines of one instance for one month: running time per size (capped per month),
    stopped disk, custom-size units, and traffic over its allowance. `sizes` is
    size -> [running, billable, stopped] seconds (usage.sum_segments or usage.stored_usage)."""
    lines: list[Line] = []
    label = instance.name
    for (flavor_id, vcpus, memory_mb, disk_gb), (running, billable, stopped) in sorted(
        sizes.items(), key=lambda item: str(item[0])
    ):
        fp = price_lookup.flavor_price(flavor_id)
        if fp is not None:
            flavor = flavors.get(str(flavor_id)) or Flavor.objects.get(pk=flavor_id)
            seconds = billable + (stopped if fp.stopped_policy == StoppedPolicy.FULL else 0)
            hours = _hours(seconds)
            exact = fp.hourly * Decimal(seconds) / 3600
            capped = exact > fp.monthly_cap
            if seconds:
                lines.append(
                    Line(
                        kind=K.RUNNING,
                        description=f"{label}: {flavor.name}, {hours} h",
                        quantity=hours,
                        unit="hour",
                        unit_price=fp.hourly,
                        amount=cents(min(exact, fp.monthly_cap)),
                        instance_id=instance.pk,
                        detail={
                            "flavor": flavor.name,
                            "seconds": seconds,
                            "cap_applied": capped,
                            "cap": str(fp.monthly_cap),
                        },
                    )
                )
            if stopped and fp.stopped_policy == StoppedPolicy.DISK:
                lines.append(_disk_line(K.STOPPED, label, disk_gb, stopped, period_seconds, prices, instance.pk))
        else:
            rate = price_lookup.unit_hourly(vcpus, memory_mb, prices)
            exact = rate * Decimal(billable) / 3600
            cap = rate * prices.custom_cap_hours
            if billable:
                hours = _hours(billable)
                lines.append(
                    Line(
                        kind=K.CUSTOM,
                        description=f"{label}: {vcpus} vCPU, {memory_mb} MiB, {hours} h",
                        quantity=hours,
                        unit="hour",
                        unit_price=rate,
                        amount=cents(min(exact, cap)),
                        instance_id=instance.pk,
                        detail={
                            "vcpu_hours": str(hours * vcpus),
                            "ram_gb_hours": str(hours * memory_mb / 1024),
                            "seconds": billable,
                            "cap_applied": exact > cap,
                            "cap": str(cents(cap)),
                        },
                    )
                )
            if running + stopped:
                lines.append(
                    _disk_line(K.CUSTOM, label, disk_gb, running + stopped, period_seconds, prices, instance.pk)
                )
    lines.extend(_overage(instance, tx_bytes, prices))
    return lines


def _disk_line(kind, label, disk_gb, seconds, period_seconds, prices, instance_id) -> Line:
    gib_months = (Decimal(disk_gb) * seconds / period_seconds).quantize(SIX)
    exact = Decimal(disk_gb) * seconds / period_seconds * prices.disk_gb_month
    return Line(
        kind=kind,
        description=f"{label}: disk {disk_gb} GiB, {gib_months} GiB-months",
        quantity=gib_months,
        unit="GiB-month",
        unit_price=prices.disk_gb_month,
        amount=cents(exact),
        instance_id=instance_id,
        detail={"seconds": seconds},
    )


def _overage(instance: Instance, tx_bytes: int, prices: PriceList) -> list[Line]:
    allowance = instance.traffic_gb * GIB
    if tx_bytes <= allowance or price_lookup.over_policy(instance) != OverPolicy.BILL:
        return []
    unit_price = price_lookup.overage_gb_price(instance.flavor_id, prices)
    over_gib = Decimal(tx_bytes - allowance) / GIB
    return [
        Line(
            kind=K.OVERAGE,
            description=f"{instance.name}: traffic over the {instance.traffic_gb} GiB allowance",
            quantity=over_gib.quantize(SIX),
            unit="GiB",
            unit_price=unit_price,
            amount=cents(over_gib * unit_price),
            instance_id=instance.pk,
            detail={"tx_bytes": tx_bytes, "allowance_bytes": allowance},
        )
    ]


def total(lines: list[Line]) -> Decimal:
    return sum((line.amount for line in lines), ZERO)
