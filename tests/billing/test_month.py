"""A simulated month, and the next, with a controlled clock: invoices match hand-computed totals.

Everything runs through the real services and the real worker code (Celery eager) on hosts of
libvirt's test driver. Traffic counters are given to metering.ingest in the shape the driver's
getAllDomainStats returns (the test driver itself reports no counters).
"""

from datetime import UTC, date, datetime
from decimal import Decimal

import time_machine

from billing import invoicing, metering, usage
from billing.models import BillingAccount, FlavorPrice, Invoice, MeterSample, OverPolicy, SlaTier, UsageRecord
from compute import services, upkeep
from compute.drivers.base import DomainStats
from compute.models import Flavor, Host, Instance
from compute.sizing import Size, custom_size
from tests.conftest import actor
from tests.hostfaults import hypervisor_unreachable, worker_silent_since

MIB, GIB = 1024**2, 1024**3
MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def flavor(name, vcpus, memory, disk, traffic, hourly, cap, overage="0.02", policy=OverPolicy.BILL):
    f = Flavor.objects.create(
        name=name,
        vcpus=vcpus,
        memory_mb=memory,
        disk_gb=disk,
        bandwidth_mbit=100,
        traffic_gb=traffic,
        sla_percent=Decimal("99.900"),
    )
    FlavorPrice.objects.create(
        flavor=f, hourly=Decimal(hourly), monthly_cap=Decimal(cap), overage_gb=Decimal(overage), over_policy=policy
    )
    return f


def create(who, tenant, image, name, size, flavor_id=None):
    request = services.CreateRequest(name=name, image_id=str(image.pk), size=size, flavor_id=flavor_id)
    instance = services.instance_create(actor=actor(who, tenant), request=request)
    instance.refresh_from_db()
    assert instance.state == "running"
    return instance


def act(fn, who, tenant, instance, **kw):
    fn(actor=actor(who, tenant), instance=Instance.objects.get(pk=instance.pk), **kw)


def sample(host, when, *pairs):
    stats = [DomainStats(uuid=str(i.pk), power="running", tx_bytes=tx, rx_bytes=tx // 2) for i, tx in pairs]
    return metering.ingest(host=host, taken_at=when, stats=stats)


def amounts(invoice):
    return sorted((line.kind, line.amount) for line in invoice.lines.all())


def test_it_bills_a_month_of_two_tenants_to_the_cent(eager, simulated_host, image, alice, tenant_a, charlie, tenant_b):
    # given: prices, SLA tiers, two hosts (tenant A on one, tenant B on the other)
    small = flavor("small", 1, 1024, 25, 1, "0.010", "5.00")
    large = flavor("large", 2, 2048, 50, 2, "0.020", "10.00", overage="0.03")
    burst = flavor("burst", 1, 512, 10, 1, "0.600", "300.00")
    for below, credit in (("99.95", "10"), ("99", "30"), ("95", "100")):
        SlaTier.objects.create(sla_percent=Decimal("99.900"), below=Decimal(below), credit_percent=Decimal(credit))
    BillingAccount.objects.create(tenant=tenant_a, tax_rate=Decimal("0.19"))
    host_a, host_b = simulated_host(), simulated_host()

    Host.objects.filter(pk=host_b.pk).update(status=Host.Status.DISABLED)
    with time_machine.travel(at(2026, 3, 1), tick=False):
        a1 = create(alice, tenant_a, image, "a1", Size.of_flavor(small), small.pk)
    with time_machine.travel(at(2026, 3, 5), tick=False):
        a2 = create(
            alice,
            tenant_a,
            image,
            "a2",
            custom_size({"vcpus": 2, "memory_mb": 2048, "disk_gb": 20, "bandwidth_mbit": 100, "traffic_gb": 100}),
        )
        sample(host_a, at(2026, 3, 5), (a1, 2 * GIB))
    with time_machine.travel(at(2026, 3, 10, 12), tick=False):
        act(services.instance_stop, alice, tenant_a, a1)
    with time_machine.travel(at(2026, 3, 12, 12), tick=False):
        act(services.instance_start, alice, tenant_a, a1)
    with time_machine.travel(at(2026, 3, 15, 10), tick=False):
        a3 = create(alice, tenant_a, image, "a3", Size.of_flavor(burst), burst.pk)
    with time_machine.travel(at(2026, 3, 15, 10, 0, 20), tick=False):
        act(services.instance_delete, alice, tenant_a, a3)  # 20 s: billed as the 60 s minimum
    with time_machine.travel(at(2026, 3, 20), tick=False):
        act(services.instance_resize, alice, tenant_a, a1, size=Size.of_flavor(large), flavor_id=large.pk)
    with time_machine.travel(at(2026, 3, 22), tick=False):
        sample(host_a, at(2026, 3, 22), (a1, 3 * GIB))  # 3 GiB sent in all; 2 GiB included
    with time_machine.travel(at(2026, 3, 25), tick=False):
        act(services.instance_delete, alice, tenant_a, a1)
    with time_machine.travel(at(2026, 4, 1), tick=False):
        act(services.instance_delete, alice, tenant_a, a2)

    Host.objects.filter(pk=host_b.pk).update(status=Host.Status.UP)
    Host.objects.filter(pk=host_a.pk).update(status=Host.Status.DISABLED)
    with time_machine.travel(at(2026, 3, 1), tick=False):
        b1 = create(charlie, tenant_b, image, "b1", Size.of_flavor(small), small.pk)
    # a counter reset (QEMU restarted) in the middle of an hour: 100 + 100 + 50 + 100 MiB
    for minute, tx in ((5, 100), (20, 200), (35, 50), (50, 150)):
        sample(host_b, at(2026, 3, 3, 10, minute), (b1, tx * MIB))
    # host B is silent for 12 hours: 732 of 744 meant hours up, 98.39% < 99% -> 30% credit
    worker_silent_since(host_b, at(2026, 3, 19, 23, 50))
    Host.objects.filter(pk=host_a.pk).update(status=Host.Status.UP, last_heartbeat=at(2026, 3, 20))
    with time_machine.travel(at(2026, 3, 20), tick=False), hypervisor_unreachable(host_b):
        assert upkeep.check_silent_hosts()["marked_down"] == [host_b.name]
    with time_machine.travel(at(2026, 3, 20, 12), tick=False):
        upkeep.heartbeat(host_b.pk)

    # when: the March run
    with time_machine.travel(at(2026, 4, 1, 0, 30), tick=False):
        report = invoicing.run_month(period=MARCH)

    # then: tenant A, by hand
    #   a1 small running 228 h + 180 h = 408 h x 0.010 = 4.08; large 120 h x 0.020 = 2.40
    #   a1 stopped 48 h: disk 25 GiB x 48/744 month x 0.05 = 0.0806 -> 0.08
    #   a1 traffic 3 GiB, large allows 2 GiB: 1 GiB x 0.03 = 0.03
    #   a2 custom 2 vCPU (0.008) + 2 GiB (0.004) = 0.024/h x 648 h = 15.552 -> 15.55
    #   a2 disk 20 GiB x 648/744 x 0.05 = 0.8710 -> 0.87
    #   a3 60 s x 0.600/h = 0.01
    #   subtotal 23.02, tax 19% 4.3738 -> 4.37, total 27.39
    inv_a = Invoice.objects.get(tenant=tenant_a, period=MARCH)
    assert amounts(inv_a) == sorted(
        [
            ("running", Decimal("4.08")),
            ("running", Decimal("2.40")),
            ("stopped", Decimal("0.08")),
            ("overage", Decimal("0.03")),
            ("custom", Decimal("15.55")),
            ("custom", Decimal("0.87")),
            ("running", Decimal("0.01")),
        ]
    )
    assert (inv_a.subtotal, inv_a.tax, inv_a.total) == (Decimal("23.02"), Decimal("4.37"), Decimal("27.39"))
    assert inv_a.state == Invoice.State.ISSUED and inv_a.number
    # tenant B: 744 h x 0.010 = 7.44, capped at the monthly 5.00; no tax; no overage (350 MiB)
    inv_b = Invoice.objects.get(tenant=tenant_b, period=MARCH)
    assert amounts(inv_b) == [("running", Decimal("5.00"))]
    assert inv_b.lines.get().detail["cap_applied"] is True
    assert (inv_b.subtotal, inv_b.tax, inv_b.total) == (Decimal("5.00"), Decimal("0.00"), Decimal("5.00"))
    assert report == {"invoices": 2, "total": Decimal("32.39")}
    b1_traffic = UsageRecord.objects.filter(instance=b1, hour=at(2026, 3, 3, 10)).get().tx_bytes
    assert b1_traffic == 350 * MIB

    # and running everything again changes nothing
    records = list(UsageRecord.objects.order_by("instance_id", "hour").values())
    samples = MeterSample.objects.count()
    with time_machine.travel(at(2026, 4, 2), tick=False):
        sample(host_b, at(2026, 3, 3, 10, 50), (b1, 150 * MIB))
        usage.aggregate(start=at(2026, 3, 1), end=at(2026, 4, 1), minimum_seconds=60)
        assert invoicing.run_month(period=MARCH) == report
    assert MeterSample.objects.count() == samples
    assert list(UsageRecord.objects.order_by("instance_id", "hour").values()) == records
    assert Invoice.objects.count() == 2

    # April: B runs all month (capped 5.00) and gets March's SLA credit: 30% of 5.00 = -1.50
    with time_machine.travel(at(2026, 5, 1, 0, 30), tick=False):
        invoicing.run_month(period=APRIL)
    inv_b_april = Invoice.objects.get(tenant=tenant_b, period=APRIL)
    assert amounts(inv_b_april) == sorted([("running", Decimal("5.00")), ("sla_credit", Decimal("-1.50"))])
    credit = inv_b_april.lines.get(kind="sla_credit")
    assert credit.detail["downtime_seconds"] == 12 * 3600 and credit.detail["availability"] == "98.3871"
    assert inv_b_april.total == Decimal("3.50")
    assert not Invoice.objects.filter(tenant=tenant_a, period=APRIL).exists()
