"""Rating at the unit level: the 60-second minimum, monthly caps, stopped policies, custom sizes,
and rounding half up to the cent (Decimal only), with tax on the rounded subtotal."""

from datetime import timedelta
from decimal import Decimal

from billing import invoicing, rating, usage
from billing.models import BillingAccount, StoppedPolicy
from billing.money import cents
from billing.prices import price_list
from compute import services
from compute.models import Instance
from tests.billing.conftest import act, at, create, priced_flavor

HOUR = 3600
MARCH_SECONDS = 31 * 24 * HOUR


def segment(flavor=None, *, running=0, billable=None, stopped=0, vcpus=1, memory_mb=512, disk_gb=10) -> dict:
    """One hour's seconds at one size, as UsageRecord.segments stores them."""
    return {
        "flavor": str(flavor.pk) if flavor else None,
        "vcpus": vcpus,
        "memory_mb": memory_mb,
        "disk_gb": disk_gb,
        "running": running,
        "billable": running if billable is None else billable,
        "stopped": stopped,
    }


def rate(instance: Instance, *segments: dict, tx_bytes: int = 0) -> list[rating.Line]:
    return rating.rate_instance(
        instance=instance,
        sizes=usage.sum_segments([list(segments)]),
        tx_bytes=tx_bytes,
        period_seconds=MARCH_SECONDS,
        prices=price_list(),
        flavors={},
    )


def lines_of(lines: list[rating.Line]) -> list[tuple[str, Decimal]]:
    return [(line.kind, line.amount) for line in lines]


def usage_of(instance: Instance, start, end) -> list[tuple]:
    hours = usage.compute_usage(start=start, end=end, minimum_seconds=60, instance_ids=[instance.pk])
    return [(u.hour, u.running, u.billable) for u in hours]


def test_it_bills_a_20_second_run_as_the_60_second_minimum(tasks_inline, host, image, alice, tenant_a):
    # given: 0.60 an hour, so the 60 s minimum costs exactly 0.01
    burst = priced_flavor("burst", hourly="0.600", cap="300.00")
    instance = create(alice, tenant_a, image, "short", burst, at(2026, 3, 15, 10))
    act(services.instance_delete, alice, tenant_a, instance, at(2026, 3, 15, 10, 0, 20))

    # when
    hours = usage.compute_usage(start=at(2026, 3, 1), end=at(2026, 4, 1), minimum_seconds=60, tenant=tenant_a)

    # then
    assert [(u.hour, u.running, u.billable) for u in hours] == [(at(2026, 3, 15, 10), 20, 60)]
    (line,) = rate(instance, *hours[0].segments_json())
    assert (line.kind, line.quantity, line.amount) == ("running", Decimal("0.016667"), Decimal("0.01"))


def test_it_bills_a_short_run_across_an_hour_boundary_once_in_the_hour_it_began(
    tasks_inline, host, image, alice, tenant_a
):
    # given: 40 s of running, 30 s before 11:00 and 10 s after
    instance = create(alice, tenant_a, image, "short", priced_flavor("small"), at(2026, 3, 15, 10, 59, 30))
    act(services.instance_stop, alice, tenant_a, instance, at(2026, 3, 15, 11, 0, 10))

    # when: the month at once, and hour by hour as the aggregation task sees it
    month = usage_of(instance, at(2026, 3, 1), at(2026, 4, 1))
    by_hour = usage_of(instance, at(2026, 3, 15, 10), at(2026, 3, 15, 11)) + usage_of(
        instance, at(2026, 3, 15, 11), at(2026, 3, 15, 12)
    )

    # then: the 20 s missing to the minimum is added once, to the hour the run began
    running = [(hour, run, billable) for hour, run, billable in month if run]
    assert running == [(at(2026, 3, 15, 10), 30, 50), (at(2026, 3, 15, 11), 10, 10)]
    assert [row for row in by_hour if row[1]] == running
    assert sum(billable for _hour, _run, billable in month) == 60


def test_it_tops_up_each_short_stretch_but_not_a_longer_one(tasks_inline, host, image, alice, tenant_a):
    # given: 20 s running, stopped, 20 s running, stopped, then 90 s running
    instance = create(alice, tenant_a, image, "flappy", priced_flavor("small"), at(2026, 3, 15, 10))
    moments = [(services.instance_stop, 20), (services.instance_start, 30), (services.instance_stop, 50)]
    moments += [(services.instance_start, 100), (services.instance_stop, 190)]
    for fn, second in moments:
        act(fn, alice, tenant_a, instance, at(2026, 3, 15, 10) + timedelta(seconds=second))

    # when
    hours = usage_of(instance, at(2026, 3, 15), at(2026, 3, 16))

    # then: 60 + 60 + 90, all in the hour they ran; the rest of the day it was stopped
    assert hours[0] == (at(2026, 3, 15, 10), 130, 210)
    assert all(billable == 0 for _hour, _run, billable in hours[1:])


def test_it_caps_a_flavor_at_its_monthly_price(db):
    flavor = priced_flavor("small", hourly="0.010", cap="5.00")
    instance = Instance(name="web", flavor=flavor, traffic_gb=1)

    # when / then: 744 h would be 7.44
    (whole,) = rate(instance, segment(flavor, running=744 * HOUR))
    assert whole.amount == Decimal("5.00") and whole.detail["cap_applied"] is True
    # exactly at the cap, and under it
    (at_cap,) = rate(instance, segment(flavor, running=500 * HOUR))
    (under,) = rate(instance, segment(flavor, running=499 * HOUR))
    assert (at_cap.amount, at_cap.detail["cap_applied"]) == (Decimal("5.00"), False)
    assert (under.amount, under.detail["cap_applied"]) == (Decimal("4.99"), False)


def test_it_bills_a_stopped_instance_its_disk_only_by_default(db):
    # given: 100 h running and 50 h stopped on a 10 GiB disk at 0.05 per GiB-month
    flavor = priced_flavor("small", hourly="0.010", disk_gb=10)
    instance = Instance(name="web", flavor=flavor, traffic_gb=1)

    # when
    lines = rate(instance, segment(flavor, running=100 * HOUR, stopped=50 * HOUR))

    # then: 10 x 50/744 x 0.05 = 0.0336 -> 0.03
    assert lines_of(lines) == [("running", Decimal("1.00")), ("stopped", Decimal("0.03"))]
    assert lines[1].quantity == Decimal("0.672043")  # GiB-months


def test_it_bills_stopped_time_at_full_price_when_the_operator_chose_so(db):
    flavor = priced_flavor("reserved", hourly="0.010", cap="5.00", stopped=StoppedPolicy.FULL)
    instance = Instance(name="web", flavor=flavor, traffic_gb=1)

    # when
    some = rate(instance, segment(flavor, running=100 * HOUR, stopped=50 * HOUR))
    month = rate(instance, segment(flavor, running=400 * HOUR, stopped=344 * HOUR))
    only_stopped = rate(instance, segment(flavor, stopped=744 * HOUR))

    # then: stopped hours count as running hours, under the same cap, with no disk line
    assert lines_of(some) == [("running", Decimal("1.50"))]
    assert some[0].detail["seconds"] == 150 * HOUR
    assert lines_of(month) == [("running", Decimal("5.00"))]
    assert lines_of(only_stopped) == [("running", Decimal("5.00"))]


def test_it_prices_a_custom_size_by_unit_and_caps_its_month(db):
    # given: 2 vCPU x 0.008 + 2 GiB x 0.004 = 0.024 an hour; cap 672 h = 16.128
    instance = Instance(name="custom", flavor=None, traffic_gb=100)
    size = {"vcpus": 2, "memory_mb": 2048, "disk_gb": 20}

    # when
    month = rate(instance, segment(running=744 * HOUR, **size))
    half = rate(instance, segment(running=300 * HOUR, stopped=444 * HOUR, **size))

    # then: the running charge stops at the cap; the disk is billed for the whole month
    assert lines_of(month) == [("custom", Decimal("16.13")), ("custom", Decimal("1.00"))]
    assert month[0].unit_price == Decimal("0.024")
    assert month[0].detail["cap_applied"] is True and month[0].detail["cap"] == "16.13"
    assert (month[0].detail["vcpu_hours"], month[0].detail["ram_gb_hours"]) == ("1488.000000", "1488.000000")
    # 300 h x 0.024 = 7.20; the disk while stopped too
    assert lines_of(half) == [("custom", Decimal("7.20")), ("custom", Decimal("1.00"))]


def test_it_rounds_half_up_to_the_cent_with_decimals_only(db):
    flavor = priced_flavor("small", hourly="0.010", cap="100.00")
    instance = Instance(name="web", flavor=flavor, traffic_gb=1)
    steep = priced_flavor("steep", hourly="0.500", cap="100.00")

    # when: amounts that land exactly on half a cent, and just under
    cases = {
        1800: "0.01",  # 0.005
        9000: "0.03",  # 0.025: half up, not to even
        1799: "0.00",  # 0.004997...
    }
    for seconds, expected in cases.items():
        (line,) = rate(instance, segment(flavor, running=seconds))
        assert line.amount == Decimal(expected), seconds
        assert isinstance(line.amount, Decimal) and isinstance(line.unit_price, Decimal)

    # then: 5.35 h x 0.5 = 2.675, which a float would round down to 2.67
    (line,) = rate(Instance(name="steep", flavor=steep, traffic_gb=1), segment(steep, running=19260))
    assert line.amount == Decimal("2.68")
    assert round(2.675, 2) == 2.67
    assert (cents(Decimal("0.005")), cents(Decimal("-0.005")), cents(Decimal("1.0049"))) == (
        Decimal("0.01"),
        Decimal("-0.01"),
        Decimal("1.00"),
    )


def test_it_taxes_the_rounded_subtotal(tasks_inline, host, image, alice, tenant_a):
    # given: two instances each running 100.5 h at 0.010 = 1.005 -> 1.01; tax 25%
    BillingAccount.objects.create(tenant=tenant_a, tax_rate=Decimal("0.25"))
    small = priced_flavor("small", hourly="0.010", cap="5.00")
    for name in ("one", "two"):
        instance = create(alice, tenant_a, image, name, small, at(2026, 3, 1))
        act(services.instance_delete, alice, tenant_a, instance, at(2026, 3, 5, 4, 30))

    # when
    invoice = invoicing.invoice_generate(tenant=tenant_a, period=at(2026, 3, 1).date())

    # then: subtotal 2.02 (not the exact 2.01), tax 0.505 -> 0.51 (not 0.5025 -> 0.50)
    assert sorted(invoice.lines.values_list("amount", flat=True)) == [Decimal("1.01"), Decimal("1.01")]
    assert (invoice.subtotal, invoice.tax_rate, invoice.tax, invoice.total) == (
        Decimal("2.02"),
        Decimal("0.25"),
        Decimal("0.51"),
        Decimal("2.53"),
    )
