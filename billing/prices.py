"""Where a price comes from: the flavor's own price, else the price list's unit prices."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal

from billing.models import FlavorPrice, PriceList
from compute.models import Flavor, Instance
from compute.sizing import Size

HOURS_PER_MONTH = Decimal(730)  # the usual cloud convention for showing a monthly price


# Within `cached()` (a whole invoice run), prices are read once instead of once per line.
_run_cache: ContextVar[dict | None] = ContextVar("billing_price_cache", default=None)


@contextmanager
def cached():
    token = _run_cache.set({})
    try:
        yield
    finally:
        _run_cache.reset(token)


def remember(key, load):
    """`load()`, computed once per `cached()` run (every time outside one)."""
    cache = _run_cache.get()
    if cache is None:
        return load()
    if key not in cache:
        cache[key] = load()
    return cache[key]


def price_list() -> PriceList:
    """The price list in force; made with the defaults on first use."""

    def load() -> PriceList:
        return PriceList.objects.order_by("id").first() or PriceList.objects.create()

    return remember("price_list", load)


def flavor_price(flavor_id) -> FlavorPrice | None:
    if flavor_id is None:
        return None
    return remember(("flavor_price", str(flavor_id)), lambda: FlavorPrice.objects.filter(flavor_id=flavor_id).first())


def flavors_by_id() -> dict:
    return remember("flavors", lambda: {str(pk): f for pk, f in Flavor.objects.in_bulk().items()})


def unit_hourly(vcpus: int, memory_mb: int, prices: PriceList) -> Decimal:
    """Hourly running price of a custom size (its disk is billed per GiB-month apart)."""
    return vcpus * prices.vcpu_hour + Decimal(memory_mb) / 1024 * prices.ram_gb_hour


def over_policy(instance: Instance) -> str:
    fp = flavor_price(instance.flavor_id)
    return fp.over_policy if fp else price_list().custom_over_policy


def overage_gb_price(flavor_id, prices: PriceList) -> Decimal:
    fp = flavor_price(flavor_id)
    return fp.overage_gb if fp else prices.custom_overage_gb


def throttle_kbytes() -> int:
    return price_list().throttle_mbit * 1000 // 8


def estimate_monthly(size: Size, flavor_id=None) -> Decimal:
    """What a month of running costs at this size, before tax (for the create page)."""
    prices = price_list()
    fp = flavor_price(flavor_id)
    if fp:
        return min(fp.hourly * HOURS_PER_MONTH, fp.monthly_cap)
    running = unit_hourly(size.vcpus, size.memory_mb, prices) * min(HOURS_PER_MONTH, prices.custom_cap_hours)
    return running + size.disk_gb * prices.disk_gb_month


def estimate_hourly(size: Size, flavor_id=None) -> Decimal:
    """What an hour of running costs at this size, before tax (for the catalogue)."""
    prices = price_list()
    fp = flavor_price(flavor_id)
    if fp:
        return fp.hourly
    return unit_hourly(size.vcpus, size.memory_mb, prices) + size.disk_gb * prices.disk_gb_month / HOURS_PER_MONTH
