"""Meter samples: growth between samples, counter resets, reruns, and the real collection on
libvirt's test driver."""

import time_machine

from billing import metering, usage
from billing.models import MeterSample
from compute import services
from tests.billing.conftest import MIB, act, at, create, priced_flavor, sample, stats


def deltas(instance) -> list[tuple[int, int, int]]:
    rows = MeterSample.objects.filter(instance=instance).order_by("taken_at")
    return [(row.tx_delta, row.rx_delta, row.cpu_ns_delta) for row in rows]


def test_it_counts_the_first_sample_in_full_and_then_the_growth(tasks_inline, host, image, alice, tenant_a):
    instance = create(alice, tenant_a, image, "web", priced_flavor("small"), at(2026, 3, 1))

    # when
    first = metering.ingest(host=host, taken_at=at(2026, 3, 2, 10), stats=[stats(instance, tx=500, rx=70, cpu_ns=9)])
    second = metering.ingest(
        host=host, taken_at=at(2026, 3, 2, 10, 1), stats=[stats(instance, tx=800, rx=100, cpu_ns=15)]
    )

    # then: a domain's counters start at zero, so the first value is all growth
    assert (first, second) == (1, 1)
    assert deltas(instance) == [(500, 70, 9), (300, 30, 6)]
    latest = MeterSample.objects.get(instance=instance, taken_at=at(2026, 3, 2, 10, 1))
    assert (latest.tx_bytes, latest.rx_bytes, latest.cpu_time_ns) == (800, 100, 15)


def test_it_neither_loses_nor_doubles_traffic_when_a_counter_resets_mid_hour(
    tasks_inline, host, image, alice, tenant_a
):
    # given: 100 MiB, then 200 (grew 100), then QEMU restarts and the counter reads 50
    instance = create(alice, tenant_a, image, "web", priced_flavor("small"), at(2026, 3, 1))
    for minute, tx in ((5, 100), (20, 200), (35, 50), (50, 150)):
        sample(host, at(2026, 3, 3, 10, minute), (instance, tx * MIB))

    # then: the reset counts its new value, never a negative or the old total again
    assert [tx for tx, _rx, _cpu in deltas(instance)] == [100 * MIB, 100 * MIB, 50 * MIB, 100 * MIB]
    hours = usage.compute_usage(start=at(2026, 3, 3), end=at(2026, 3, 4), minimum_seconds=60, tenant=tenant_a)
    (hour,) = [h for h in hours if h.tx_bytes]
    assert (hour.hour, hour.tx_bytes, hour.rx_bytes) == (at(2026, 3, 3, 10), 350 * MIB, 175 * MIB)
    assert metering.traffic_this_month([instance.pk], at(2026, 3, 31)) == {instance.pk: 350 * MIB}


def test_it_counts_a_reset_to_zero_as_no_growth(tasks_inline, host, image, alice, tenant_a):
    # given: a stopped domain reports no counters; started again, it counts from zero
    instance = create(alice, tenant_a, image, "web", priced_flavor("small"), at(2026, 3, 1))
    for minute, tx in ((0, 300), (10, 0), (20, 40)):
        sample(host, at(2026, 3, 3, 10, minute), (instance, tx))

    # then
    assert [tx for tx, _rx, _cpu in deltas(instance)] == [300, 0, 40]


def test_it_stores_nothing_new_when_the_same_moment_is_ingested_again(tasks_inline, host, image, alice, tenant_a):
    instance = create(alice, tenant_a, image, "web", priced_flavor("small"), at(2026, 3, 1))
    sample(host, at(2026, 3, 2, 10), (instance, 100))
    sample(host, at(2026, 3, 2, 10, 1), (instance, 400))
    before = list(MeterSample.objects.order_by("id").values())

    # when: a redelivered task ingests the same collection, even with other readings
    again = sample(host, at(2026, 3, 2, 10, 1), (instance, 400))
    other = sample(host, at(2026, 3, 2, 10, 1), (instance, 9000))

    # then
    assert (again, other) == (0, 0)
    assert list(MeterSample.objects.order_by("id").values()) == before
    assert metering.traffic_this_month([instance.pk], at(2026, 3, 31)) == {instance.pk: 400}


def test_it_ignores_deleted_instances_other_hosts_and_unknown_domains(
    tasks_inline, simulated_host, image, alice, tenant_a, charlie, tenant_b
):
    # given: one instance on each host, and one on the first host that was deleted
    small = priced_flavor("small")
    first, second = simulated_host(), simulated_host()
    second.status = "disabled"
    second.save(update_fields=["status"])
    here = create(alice, tenant_a, image, "here", small, at(2026, 3, 1))
    gone = create(alice, tenant_a, image, "gone", small, at(2026, 3, 1))
    act(services.instance_delete, alice, tenant_a, gone, at(2026, 3, 1, 1))
    first.status, second.status = "disabled", "up"
    first.save(update_fields=["status"])
    second.save(update_fields=["status"])
    elsewhere = create(charlie, tenant_b, image, "elsewhere", small, at(2026, 3, 1))
    assert (here.host_id, gone.host_id, elsewhere.host_id) == (first.pk, first.pk, second.pk)

    # when: the first host's collection names all three, and a domain nobody owns
    stored = metering.ingest(
        host=first,
        taken_at=at(2026, 3, 2),
        stats=[
            stats(here, tx=10),
            stats(gone, tx=20),
            stats(elsewhere, tx=30),
            stats(here.__class__(), tx=40),  # a fresh UUID: no such instance
        ],
    )

    # then
    assert stored == 1
    assert list(MeterSample.objects.values_list("instance_id", "tx_delta")) == [(here.pk, 10)]


def test_it_meters_running_instances_on_the_test_driver(tasks_inline, host, image, alice, tenant_a):
    # given: a running instance; libvirt's test driver reports its state but no counters
    instance = create(alice, tenant_a, image, "web", priced_flavor("small"))

    # when
    collected = metering.collect(host)
    report = metering.meter(host, now=at(2030, 1, 1, 12))
    again = metering.meter(host, now=at(2030, 1, 1, 12))

    # then
    assert [(s.uuid, s.power) for s in collected] == [(str(instance.pk), "running")]
    assert report == {"samples": 1, "throttled": [], "restored": [], "notified": [], "failed": []}
    assert again["samples"] == 0
    row = MeterSample.objects.get(instance=instance)
    assert (row.taken_at, row.tx_bytes, row.tx_delta, row.rx_delta) == (at(2030, 1, 1, 12), 0, 0, 0)


def test_it_drops_a_collection_that_arrives_after_a_later_one(tasks_inline, host, image, alice, tenant_a):
    # given: collections at 10:00 and 10:02 are stored; the one taken at 10:01 was delayed
    instance = create(alice, tenant_a, image, "web", priced_flavor("small"), at(2026, 3, 1))
    sample(host, at(2026, 3, 2, 10), (instance, 100))
    sample(host, at(2026, 3, 2, 10, 2), (instance, 300))

    # when
    late = sample(host, at(2026, 3, 2, 10, 1), (instance, 200))

    # then: the 10:02 sample already holds that growth; storing it again would count it twice
    assert late == 0
    assert [tx for tx, _rx, _cpu in deltas(instance)] == [100, 200]
    assert metering.traffic_this_month([instance.pk], at(2026, 3, 31)) == {instance.pk: 300}


def test_it_keeps_what_a_guest_sent_before_it_left_its_host_live(tasks_inline, host, image, alice, tenant_a):
    # given: sampled at 10:00 with 100 MiB sent; a live migration at 10:00:30, by which time it
    # had sent 160; the new QEMU on the target starts at zero and reads 30 at 10:01
    from compute import signals

    instance = create(alice, tenant_a, image, "web", priced_flavor("small"), at(2026, 3, 1))
    sample(host, at(2026, 3, 2, 10), (instance, 100 * MIB))

    # when: compute says it is leaving (operations.migrate, just before the move)
    with time_machine.travel(at(2026, 3, 2, 10, 0, 30), tick=False):
        signals.leaving_host.send(sender=None, host=host, stats=stats(instance, tx=160 * MIB))
    sample(host, at(2026, 3, 2, 10, 1), (instance, 30 * MIB))

    # then: none of the 60 MiB sent before the move is lost, and nothing counts twice
    assert [tx for tx, _rx, _cpu in deltas(instance)] == [100 * MIB, 60 * MIB, 30 * MIB]
