"""Suspending a tenant (by hand or for an overdue invoice) and reactivating it; SLA availability
from the recorded history, and the credit tiers."""

from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from base.errors import Conflict
from billing import invoicing, sla, suspension
from billing.models import Invoice, SlaTier
from compute import services, upkeep
from compute.driver_refs import driver
from compute.drivers.libvirt import connect
from compute.models import Instance, InstanceState
from compute.sizing import Size
from tenants.models import AuditEvent, Tenant
from tests.billing.conftest import act, at, committed, create, priced_flavor
from tests.conftest import actor, client_for
from tests.hostfaults import hypervisor_unreachable, worker_silent_since

S = InstanceState
MARCH, APRIL = at(2026, 3, 1), at(2026, 4, 1)


@pytest.fixture
def fleet(tasks_inline, host, image, alice, tenant_a, charlie, tenant_b):
    """A: web and db running, idle stopped by alice. B: one instance running."""
    small = priced_flavor("small")
    web = create(alice, tenant_a, image, "web", small)
    db = create(alice, tenant_a, image, "db", small)
    idle = act(services.instance_stop, alice, tenant_a, create(alice, tenant_a, image, "idle", small))
    theirs = create(charlie, tenant_b, image, "theirs", small)
    return {"web": web, "db": db, "idle": idle, "theirs": theirs, "flavor": small}


def state(instance: Instance) -> str:
    return Instance.objects.get(pk=instance.pk).state


def test_it_stops_running_instances_of_a_suspended_tenant_without_deleting_them(fleet, host, tenant_a):
    # when
    stopped = committed(suspension.tenant_suspend, actor=None, tenant=tenant_a, reason="Invoice unpaid")

    # then: stopped, kept, and remembered; B's instance runs on
    assert sorted(stopped) == sorted([str(fleet["web"].pk), str(fleet["db"].pk)])
    for name in ("web", "db"):
        instance = Instance.objects.get(pk=fleet[name].pk)
        assert (instance.state, instance.stopped_by_suspension) == (S.STOPPED, True)
        assert driver(host).status(str(instance.pk)).power == "shutoff"
    assert Instance.objects.get(pk=fleet["idle"].pk).stopped_by_suspension is False
    assert state(fleet["theirs"]) == S.RUNNING
    assert (tenant_a.status, tenant_a.suspended_reason) == (Tenant.Status.SUSPENDED, "Invoice unpaid")
    assert AuditEvent.objects.filter(tenant=tenant_a, action="tenant.suspend", user=None).count() == 1


def test_it_refuses_a_suspended_tenant_new_or_started_instances(fleet, image, alice, tenant_a):
    committed(suspension.tenant_suspend, actor=None, tenant=tenant_a, reason="Invoice unpaid")
    client = client_for(alice)

    # when / then: through the services
    request = services.CreateRequest(
        name="new", image_id=str(image.pk), size=Size.of_flavor(fleet["flavor"]), flavor_id=fleet["flavor"].pk
    )
    with pytest.raises(Conflict):
        services.instance_create(actor=actor(alice, tenant_a), request=request)
    with pytest.raises(Conflict):
        services.instance_start(actor=actor(alice, tenant_a), instance=Instance.objects.get(pk=fleet["web"].pk))

    # and through the API
    body = {"name": "new", "image": str(image.pk), "flavor": str(fleet["flavor"].pk)}
    created = client.post(reverse("api:instance-list"), body, format="json")
    started = client.post(reverse("api:instance-start", args=[fleet["web"].pk]), {}, format="json")
    assert (created.status_code, started.status_code) == (409, 409)
    assert "suspended" in created.json()["detail"] and "suspended" in started.json()["detail"]
    assert Instance.objects.filter(tenant=tenant_a).count() == 3
    assert state(fleet["web"]) == S.STOPPED


def test_it_starts_again_exactly_what_the_suspension_stopped(fleet, tenant_a):
    committed(suspension.tenant_suspend, actor=None, tenant=tenant_a, reason="Invoice unpaid")

    # when
    started = committed(suspension.tenant_reactivate, actor=None, tenant=tenant_a)

    # then: the one alice had stopped herself stays stopped
    assert sorted(started) == sorted([str(fleet["web"].pk), str(fleet["db"].pk)])
    assert [state(fleet[name]) for name in ("web", "db", "idle")] == [S.RUNNING, S.RUNNING, S.STOPPED]
    assert not Instance.objects.filter(stopped_by_suspension=True).exists()
    tenant_a.refresh_from_db()
    assert tenant_a.is_active and tenant_a.suspended_reason == ""


def issued_invoice(tenant, period, issued_at) -> Invoice:
    """An invoice issued at `issued_at` (due 14 days later; suspension after 14 more)."""
    draft = Invoice.objects.create(tenant=tenant, period=period, currency="EUR", total=Decimal("5.00"))
    with time_machine.travel(issued_at, tick=False):
        return invoicing.invoice_issue(invoice=draft)


def test_it_suspends_a_tenant_only_once_its_invoice_is_past_due_and_grace(fleet, tenant_a, tenant_b):
    # given: both issued April 2 (due April 16, grace until April 30); B paid
    unpaid = issued_invoice(tenant_a, MARCH.date(), at(2026, 4, 2, 9))
    invoicing.invoice_mark_paid(invoice=issued_invoice(tenant_b, MARCH.date(), at(2026, 4, 2, 9)))

    # when: within the grace period, then past it
    with time_machine.travel(at(2026, 4, 30, 9), tick=False):
        within = committed(suspension.suspend_overdue)
    with time_machine.travel(at(2026, 4, 30, 9, 0, 1), tick=False):
        past = committed(suspension.suspend_overdue)
        again = committed(suspension.suspend_overdue)

    # then: only A, once, and its running instances stopped
    assert (within, past, again) == ([], [str(tenant_a.pk)], [])
    suspended = Tenant.objects.get(pk=tenant_a.pk)
    assert suspended.status == Tenant.Status.SUSPENDED
    assert suspended.suspended_reason == (
        f"Invoice {unpaid.number} (5.00 EUR) was due on 2026-04-16 and is still unpaid after the grace period."
    )
    assert Tenant.objects.get(pk=tenant_b.pk).status == Tenant.Status.ACTIVE
    assert [state(fleet[name]) for name in ("web", "db", "theirs")] == [S.STOPPED, S.STOPPED, S.RUNNING]


def test_it_never_suspends_a_tenant_for_an_invoice_that_credits_it(fleet, tenant_a):
    # given: an issued invoice whose SLA credit is larger than the month's charges
    credit = issued_invoice(tenant_a, MARCH.date(), at(2026, 4, 2, 9))
    Invoice.objects.filter(pk=credit.pk).update(subtotal=Decimal("-1.50"), total=Decimal("-1.50"))

    # when: long past its due date and the grace period
    with time_machine.travel(at(2026, 6, 1), tick=False):
        suspended = committed(suspension.suspend_overdue)

    # then: nothing is owed, so nothing is suspended
    assert suspended == []
    assert Tenant.objects.get(pk=tenant_a.pk).is_active and state(fleet["web"]) == S.RUNNING


# -- SLA ---------------------------------------------------------------------------------------


@pytest.fixture
def running_all_march(tasks_inline, host, image, alice, tenant_a):
    return create(alice, tenant_a, image, "web", priced_flavor("small"), MARCH)


def test_it_counts_a_host_down_window_as_downtime(running_all_march, host):
    # given: the host misses its heartbeats from March 20 to March 20, 12:00
    worker_silent_since(host, at(2026, 3, 19, 23, 50))
    with time_machine.travel(at(2026, 3, 20), tick=False), hypervisor_unreachable(host):
        assert upkeep.check_silent_hosts()["marked_down"] == [host.name]
    with time_machine.travel(at(2026, 3, 20, 12), tick=False):
        upkeep.heartbeat(host.pk)

    # when
    measured = sla.availability(running_all_march, MARCH, APRIL)

    # then: 732 of 744 hours
    assert (measured.meant_seconds, measured.downtime_seconds) == (744 * 3600, 12 * 3600)
    assert measured.percent == Decimal("98.3871")


def test_it_counts_an_instance_failed_by_the_system_as_downtime(running_all_march, host, image, alice, tenant_a):
    # given: its domain vanishes from the host on March 10; alice rebuilds it six hours later
    dom = connect(host.uri).lookupByUUIDString(str(running_all_march.pk))
    dom.destroy()
    dom.undefine()
    with time_machine.travel(at(2026, 3, 10), tick=False):
        assert upkeep.sync_power_states(host.pk)["missing"] == [str(running_all_march.pk)]
    assert state(running_all_march) == S.ERROR
    act(services.instance_rebuild, alice, tenant_a, running_all_march, at(2026, 3, 10, 6), image_id=image.pk)
    assert state(running_all_march) == S.RUNNING

    # when
    measured = sla.availability(running_all_march, MARCH, APRIL)

    # then
    assert (measured.meant_seconds, measured.downtime_seconds) == (744 * 3600, 6 * 3600)
    assert measured.percent == Decimal("99.1935")


def test_it_does_not_count_time_the_tenant_had_it_stopped(running_all_march, host, alice, tenant_a):
    # given: alice stops it for two days; later the guest powers itself off for a day
    act(services.instance_stop, alice, tenant_a, running_all_march, at(2026, 3, 5))
    act(services.instance_start, alice, tenant_a, running_all_march, at(2026, 3, 7))
    connect(host.uri).lookupByUUIDString(str(running_all_march.pk)).shutdown()
    with time_machine.travel(at(2026, 3, 20), tick=False):
        assert upkeep.sync_power_states(host.pk)["stopped"] == [str(running_all_march.pk)]
    act(services.instance_start, alice, tenant_a, running_all_march, at(2026, 3, 21))
    # and the host is down while it is stopped
    worker_silent_since(host, at(2026, 3, 5, 10))
    with time_machine.travel(at(2026, 3, 5, 12), tick=False), hypervisor_unreachable(host):
        upkeep.check_silent_hosts()
    with time_machine.travel(at(2026, 3, 6), tick=False):
        upkeep.heartbeat(host.pk)

    # when
    measured = sla.availability(running_all_march, MARCH, APRIL)

    # then: 72 h not meant to run, none of the rest down
    assert (measured.meant_seconds, measured.downtime_seconds) == ((744 - 72) * 3600, 0)
    assert measured.percent == Decimal("100")


def test_it_credits_the_largest_tier_whose_threshold_was_missed(db):
    for below, credit in (("99.95", "10"), ("99", "30"), ("95", "100")):
        SlaTier.objects.create(sla_percent=Decimal("99.900"), below=Decimal(below), credit_percent=Decimal(credit))
    SlaTier.objects.create(sla_percent=Decimal("99.000"), below=Decimal("99.5"), credit_percent=Decimal("50"))

    # when / then
    expected = {"100": "0", "99.95": "0", "99.9499": "10", "99": "10", "98.9999": "30", "98.3871": "30", "50": "100"}
    for measured, credit in expected.items():
        assert sla.credit_percent(Decimal("99.900"), Decimal(measured)) == Decimal(credit), measured
    assert sla.credit_percent(Decimal("99.000"), Decimal("99.4")) == Decimal("50")
    assert sla.credit_percent(Decimal("99.500"), Decimal("10")) == Decimal("0")  # no tiers for this level
