"""Hours the hourly task made final are not computed again by the monthly run; hours it has not
made final (never aggregated, or aggregated before they settled) are."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import time_machine

from billing import invoicing, usage
from billing.models import AggregatedHour, Invoice, UsageRecord
from compute import services
from compute.sizing import Size
from tests.billing.conftest import GIB, act, at, create, priced_flavor, sample

MARCH = at(2026, 3, 1).date()


def running_seconds(instance) -> int:
    return sum(UsageRecord.objects.filter(instance=instance).values_list("running_seconds", flat=True))


def hourly_task(start, end, *, when):
    """What aggregate_recent_hours did, hour by hour, at `when`."""
    with time_machine.travel(when, tick=False):
        usage.aggregate(start=start, end=end, minimum_seconds=60)


def test_it_notes_the_whole_hours_of_a_fleet_wide_run_only(tasks_inline, host, image, alice, tenant_a):
    create(alice, tenant_a, image, "web", priced_flavor("small"), when=at(2026, 3, 31, 20))

    hourly_task(at(2026, 3, 31, 21, 30), at(2026, 3, 31, 23, 15), when=at(2026, 4, 2))
    usage.aggregate(start=at(2026, 3, 31, 0), end=at(2026, 3, 31, 3), minimum_seconds=60, tenant=tenant_a)

    assert set(AggregatedHour.objects.values_list("hour", flat=True)) == {at(2026, 3, 31, 22)}


def test_it_reads_settled_hours_and_computes_the_rest(tasks_inline, host, image, alice, tenant_a):
    # given: an instance running 20:00 to 23:00 on the last day of March
    vm = create(alice, tenant_a, image, "web", priced_flavor("small"), when=at(2026, 3, 31, 20))
    act(services.instance_stop, alice, tenant_a, vm, when=at(2026, 3, 31, 23))
    # 20:00 was aggregated long after it ended (final); 21:00 while it was still running (not)
    hourly_task(at(2026, 3, 31, 20), at(2026, 3, 31, 21), when=at(2026, 3, 31, 22))
    hourly_task(at(2026, 3, 31, 21), at(2026, 3, 31, 22), when=at(2026, 3, 31, 21, 30))
    # make the stored rows recognisable: what the run trusts stays, what it recomputes changes
    UsageRecord.objects.filter(instance=vm, hour=at(2026, 3, 31, 20)).update(running_seconds=1234, segments=[])
    UsageRecord.objects.filter(instance=vm, hour=at(2026, 3, 31, 21)).update(running_seconds=1800, segments=[])
    assert running_seconds(vm) == 1234 + 1800

    # when
    with time_machine.travel(at(2026, 4, 1, 6), tick=False):
        invoicing.run_month(period=MARCH)

    # then: 20:00 kept as stored, 21:00 recomputed (whole), 22:00 computed for the first time
    assert running_seconds(vm) == 1234 + 3600 + 3600
    invoice = Invoice.objects.get(tenant=tenant_a, period=MARCH)
    assert invoice.state == Invoice.State.ISSUED
    assert invoice.subtotal == Decimal("0.02")  # 21:00 and 22:00 at 0.010; the stored 20:00 bills nothing


def test_a_rerun_computes_nothing_once_every_hour_is_final(tasks_inline, host, image, alice, tenant_a):
    create(alice, tenant_a, image, "web", priced_flavor("small"), when=at(2026, 3, 31, 22))
    with time_machine.travel(at(2026, 4, 1, 6), tick=False):
        first = invoicing.run_month(period=MARCH)
        stored = usage.aggregate_unsettled(start=at(2026, 2, 1), end=at(2026, 4, 1), minimum_seconds=60)
        again = invoicing.run_month(period=MARCH)

    assert stored == 0
    assert again == first
    assert first["invoices"] == 1


def test_an_hour_is_final_only_once_the_settling_time_has_passed(settings):
    settings.METERING_SECONDS = 60
    settle = usage.settle_time(minimum_seconds=300)

    assert settle == timedelta(minutes=10)


def test_the_database_and_python_sums_of_stored_hours_agree(tasks_inline, host, image, alice, tenant_a):
    # given: two sizes in a month (a resize) and some traffic, aggregated
    small, large = priced_flavor("small"), priced_flavor("large", disk_gb=20)
    vm = create(alice, tenant_a, image, "web", small, when=at(2026, 3, 30, 10))
    act(services.instance_stop, alice, tenant_a, vm, when=at(2026, 3, 30, 12, 30))
    act(
        services.instance_resize,
        alice,
        tenant_a,
        vm,
        when=at(2026, 3, 30, 13),
        size=Size.of_flavor(large),
        flavor_id=large.pk,
    )
    act(services.instance_start, alice, tenant_a, vm, when=at(2026, 3, 31, 1))
    sample(host, at(2026, 3, 30, 11), (vm, 5 * GIB))
    sample(host, at(2026, 3, 31, 2), (vm, 7 * GIB))
    hourly_task(at(2026, 3, 1), at(2026, 4, 1), when=at(2026, 4, 1, 1))

    # when
    in_sql = usage.stored_usage(start=at(2026, 3, 1), end=at(2026, 4, 1))
    in_python = usage.stored_usage_in_python(start=at(2026, 3, 1), end=at(2026, 4, 1))

    # then
    assert in_sql == in_python
    assert len(in_sql[vm.pk].sizes) == 2
    assert in_sql[vm.pk].tx_bytes == 7 * GIB
