"""The figures the UI shows from billing, formatted for templates (billing computes them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from base import units
from billing import prices, selectors

NOT_YET = "—"


def money(value, currency: str = "") -> str:
    """An amount as every page shows it (base.units.money)."""
    if value is None:
        return NOT_YET
    if isinstance(value, Decimal | int | float):
        return units.money(value, currency)
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


def hourly_estimate(size, flavor_id=None) -> str:
    return units.rate(prices.estimate_hourly(size, flavor_id), prices.price_list().currency)


def revenue_last_month() -> dict:
    """Last invoiced month's invoiced and unpaid totals, formatted with the currency."""
    figures = selectors.revenue_last_month()
    currency = prices.price_list().currency
    return {"invoiced": money(figures["invoiced"], currency), "unpaid": money(figures["unpaid"], currency)}


def usage_series(instance, now: datetime | None = None) -> dict[str, list[dict]]:
    """Chart points {"t": ISO moment, "v": value} every 5 minutes of the last day, from the
    meter samples: CPU as a percentage of the instance's vCPUs, traffic in bytes per 5 minutes,
    disk space used in bytes. Empty until metering has samples."""
    return selectors.instance_sample_series(instance, now=now)
