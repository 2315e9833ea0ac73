"""The figures the UI shows from billing, formatted for templates (billing computes them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing import prices, selectors

NOT_YET = "—"
HOUR_SECONDS = 3600


def money(value, currency: str = "") -> str:
    if value is None:
        return NOT_YET
    if isinstance(value, Decimal | int | float):
        return f"{Decimal(value).quantize(Decimal('0.01')):,} {currency}".strip()
    return str(value)


def costs_so_far(tenant, instances: Iterable) -> dict:
    """Each instance's cost this month, by instance id, formatted."""
    instances = list(instances)
    month = selectors.month_to_date(tenant=tenant, instance_ids=[i.pk for i in instances])
    costs = {row["instance"].pk: row["cost"] for row in month["instances"]}
    return {i.pk: money(costs.get(i.pk, Decimal(0)), month["currency"]) for i in instances}


def cost_so_far(instance) -> str:
    return costs_so_far(instance.tenant, [instance])[instance.pk]


def monthly_estimate(size, flavor_id=None) -> str:
    return money(prices.estimate_monthly(size, flavor_id), prices.price_list().currency)


def revenue_this_month() -> str:
    figures = selectors.revenue_this_month()
    return f"{money(figures['invoiced'])} invoiced · {money(figures['unpaid'])} unpaid"


def usage_series(instance, now: datetime | None = None) -> dict[str, list[dict]]:
    """Chart points {"t": ISO hour, "v": value}: CPU as a percentage of the instance's vCPUs over
    the hour (so far, for the current one), traffic in bytes. Empty until metering has samples."""
    raw = selectors.instance_usage_series(instance)
    hours = raw.get("hours", [])
    now = now or timezone.now()
    cpu = []
    for hour, seconds in zip(hours, raw.get("cpu_seconds", []), strict=False):
        elapsed = min(HOUR_SECONDS, max(1.0, (now - datetime.fromisoformat(hour)).total_seconds()))
        cpu.append({"t": hour, "v": round(100 * float(seconds) / (elapsed * max(instance.vcpus, 1)), 1)})
    return {
        "cpu": cpu,
        "rx_bytes": [{"t": h, "v": v} for h, v in zip(hours, raw.get("rx_bytes", []), strict=False)],
        "tx_bytes": [{"t": h, "v": v} for h, v in zip(hours, raw.get("tx_bytes", []), strict=False)],
    }
