"""The monthly traffic allowance: throttling through the driver (visible in the domain's live
interface parameters on libvirt's test driver), billing the overage, and the 80% and 100% notices."""

import socket
from decimal import Decimal

import libvirt
import time_machine
from django.core import mail
from django.urls import reverse

from billing import invoicing, metering, prices, selectors
from billing.models import OverPolicy, TrafficNotice
from compute.drivers.libvirt import connect
from compute.models import Host, Instance, InstanceAction, InstanceState
from tests.billing.conftest import GIB, MIB, at, create, priced_flavor, sample
from tests.conftest import client_for


# libvirt's test driver refuses VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_AFFECT_CONFIG in one
# setInterfaceParameters call ("mutually exclusive"), which compute's LibvirtDriver.set_bandwidth
# makes for a running domain; QEMU accepts it. Until the driver sets LIVE and CONFIG in two calls,
# throttling a running instance fails here (metering logs the HostError and reports the instance
# under "failed"). Strict, so these fail loudly once the driver is fixed: then drop the mark.
def live_rates(host: Host, instance: Instance) -> tuple[int, int]:
    """The interface's inbound and outbound average (KiB/s) as the running domain has them now."""
    dom = connect(host.uri).lookupByUUIDString(str(instance.pk))
    params = dom.interfaceParameters(instance.mac_address, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    return params["inbound.average"], params["outbound.average"]


def test_it_throttles_the_live_interface_past_the_allowance_and_lifts_it_next_month(
    tasks_inline, host, image, alice, tenant_a
):
    # given: 1 GiB a month at 100 Mbit/s, throttled to the price list's 1 Mbit/s past it
    flavor = priced_flavor("capped", traffic_gb=1, bandwidth_mbit=100, policy=OverPolicy.THROTTLE)
    instance = create(alice, tenant_a, image, "web", flavor, at(2026, 3, 1))
    assert live_rates(host, instance) == (12500, 12500)
    sample(host, at(2026, 3, 10, 9), (instance, 900 * MIB))
    assert metering.enforce_allowances(host=host, now=at(2026, 3, 10, 9))["throttled"] == []

    # when: the next metering cycle sees the allowance passed
    sample(host, at(2026, 3, 10, 9, 1), (instance, GIB + 1))
    report = metering.enforce_allowances(host=host, now=at(2026, 3, 10, 9, 1))

    # then: the running domain's interface is limited, and the tenant can see why
    assert report["failed"] == []
    assert report["throttled"] == [str(instance.pk)]
    assert live_rates(host, instance) == (125, 125)  # 1 Mbit/s in KiB/s
    instance.refresh_from_db()
    assert instance.throttled is True
    action = InstanceAction.objects.get(instance=instance, action="throttle")
    assert action.status == InstanceAction.Status.DONE
    assert action.detail["reason"] == "monthly traffic allowance used up"
    assert action.detail["live"]["outbound.average"] == 125
    assert "Throttled to 1 Mbit/s" in selectors.throttle_reason(instance)
    assert "1 GiB traffic allowance is used up" in selectors.throttle_reason(instance)
    detail = client_for(alice).get(reverse("api:instance-detail", args=[instance.pk]))
    assert detail.status_code == 200 and detail.json()["throttled"] is True
    # a later cycle of the same month changes nothing
    assert metering.enforce_allowances(host=host, now=at(2026, 3, 20))["throttled"] == []
    assert InstanceAction.objects.filter(instance=instance, action="throttle").count() == 1

    # when: the first metering cycle of April
    with time_machine.travel(at(2026, 4, 1, 0, 1), tick=False):
        lifted = metering.meter(host)

    # then: back to the flavor's rate
    assert lifted["restored"] == [str(instance.pk)]
    assert live_rates(host, instance) == (12500, 12500)
    instance.refresh_from_db()
    assert instance.throttled is False and selectors.throttle_reason(instance) == ""
    restored = InstanceAction.objects.get(instance=instance, action="unthrottle")
    assert restored.detail["reason"] == "new allowance period"


def test_it_lifts_a_throttle_to_no_limit_on_a_host_without_shaping(tasks_inline, host, image, alice, tenant_a):
    # given: a host that applies no bandwidth limits of its own
    Host.objects.filter(pk=host.pk).update(shaping=False)
    flavor = priced_flavor("capped", traffic_gb=1, policy=OverPolicy.THROTTLE)
    instance = create(alice, tenant_a, image, "web", flavor, at(2026, 3, 1))
    sample(host, at(2026, 3, 10), (instance, 2 * GIB))
    assert metering.enforce_allowances(host=host, now=at(2026, 3, 10))["failed"] == []
    assert live_rates(host, instance) == (125, 125)

    # when
    report = metering.enforce_allowances(host=host, now=at(2026, 4, 1, 0, 1))

    # then: 0 is libvirt's "unlimited"
    assert report["restored"] == [str(instance.pk)]
    assert live_rates(host, instance) == (0, 0)


def test_it_explains_a_throttle_to_the_tenant(db):
    # given: the operator throttles to 2 Mbit/s
    price_list = prices.price_list()
    price_list.throttle_mbit = 2
    price_list.save()

    # when / then
    assert selectors.throttle_reason(Instance(traffic_gb=5, throttled=False)) == ""
    assert selectors.throttle_reason(Instance(traffic_gb=5, throttled=True)) == (
        "Throttled to 2 Mbit/s: this month's 5 GiB traffic allowance is used up. "
        "Full speed returns when the next month begins."
    )
    assert prices.throttle_kbytes() == 250


def test_it_bills_the_overage_instead_of_throttling_under_the_bill_policy(tasks_inline, host, image, alice, tenant_a):
    # given: 1 GiB included, 0.02 per GiB over it
    flavor = priced_flavor("metered", traffic_gb=1, policy=OverPolicy.BILL, overage="0.02", hourly="0", cap="0")
    instance = create(alice, tenant_a, image, "web", flavor, at(2026, 3, 1))

    # when: 3 GiB sent
    sample(host, at(2026, 3, 10), (instance, 3 * GIB))
    report = metering.enforce_allowances(host=host, now=at(2026, 3, 10))

    # then: full speed, and 2 GiB on the invoice
    assert report["throttled"] == []
    instance.refresh_from_db()
    assert instance.throttled is False
    assert live_rates(host, instance) == (12500, 12500)
    with time_machine.travel(at(2026, 4, 1, 1), tick=False):
        invoice = invoicing.invoice_generate(tenant=tenant_a, period=at(2026, 3, 1).date())
    overage = invoice.lines.get(kind="overage")
    assert (overage.quantity, overage.unit, overage.unit_price, overage.amount) == (
        Decimal("2"),
        "GiB",
        Decimal("0.02"),
        Decimal("0.04"),
    )
    assert overage.detail == {"tx_bytes": 3 * GIB, "allowance_bytes": GIB}


def test_it_mails_the_tenant_at_80_and_100_percent_once_each(tasks_inline, host, image, alice, tenant_a):
    flavor = priced_flavor("metered", traffic_gb=10, policy=OverPolicy.BILL)
    instance = create(alice, tenant_a, image, "web", flavor, at(2026, 3, 1))

    def cycle(day: int, sent: int) -> list[str]:
        sample(host, at(2026, 3, day), (instance, sent))
        return metering.enforce_allowances(host=host, now=at(2026, 3, day))["notified"]

    # when / then: under 80%, nothing
    assert cycle(2, 7 * GIB) == []
    assert mail.outbox == []

    # 80%: one notice, and none on the next cycle
    assert cycle(3, 8 * GIB) == [f"{instance.pk}:80"]
    assert cycle(4, 8 * GIB + 1) == []
    assert len(mail.outbox) == 1
    first = mail.outbox[0]
    assert first.to == ["alice@example.com"]
    assert first.subject == "[Cloud Portal] Instance web: 80% of its monthly traffic used"
    assert "sent 8 GiB this month" in first.body and "billed per GiB" in first.body

    # 100%: one notice, and none on the next cycles
    assert cycle(5, 10 * GIB) == [f"{instance.pk}:100"]
    assert cycle(6, 12 * GIB) == []
    assert cycle(7, 13 * GIB) == []
    assert [m.subject for m in mail.outbox] == [
        "[Cloud Portal] Instance web: 80% of its monthly traffic used",
        "[Cloud Portal] Instance web: 100% of its monthly traffic used",
    ]
    assert TrafficNotice.objects.filter(instance=instance).count() == 2


def test_it_sends_both_notices_when_one_cycle_jumps_past_the_allowance(tasks_inline, host, image, alice, tenant_a):
    flavor = priced_flavor("metered", traffic_gb=1, policy=OverPolicy.BILL)
    instance = create(alice, tenant_a, image, "web", flavor, at(2026, 3, 1))
    sample(host, at(2026, 3, 2), (instance, 2 * GIB))

    # when
    notified = metering.enforce_allowances(host=host, now=at(2026, 3, 2))["notified"]

    # then
    assert notified == [f"{instance.pk}:80", f"{instance.pk}:100"]
    assert len(mail.outbox) == 2


def test_it_keeps_enforcing_the_others_when_the_host_refuses_one_domain(tasks_inline, host, image, alice, tenant_a):
    # given: two instances past their allowance; the newer one (enforced first) lost its domain
    billed = create(alice, tenant_a, image, "billed", priced_flavor("metered", traffic_gb=1), at(2026, 3, 1))
    throttled = priced_flavor("capped", traffic_gb=1, policy=OverPolicy.THROTTLE)
    vanished = create(alice, tenant_a, image, "vanished", throttled, at(2026, 3, 1, 1))
    dom = connect(host.uri).lookupByUUIDString(str(vanished.pk))
    dom.destroy()
    dom.undefine()
    sample(host, at(2026, 3, 2), (billed, 2 * GIB), (vanished, 2 * GIB))

    # when
    report = metering.enforce_allowances(host=host, now=at(2026, 3, 2))

    # then: the refused throttle waits for the next cycle; the other instance got its notices
    assert report["failed"] == [str(vanished.pk)]
    assert report["throttled"] == []
    assert f"{billed.pk}:100" in report["notified"]
    assert Instance.objects.get(pk=vanished.pk).throttled is False
    assert Instance.objects.get(pk=vanished.pk).state == InstanceState.RUNNING
    assert not InstanceAction.objects.filter(instance=vanished, action="throttle").exists()


def test_it_sends_a_notice_on_a_later_cycle_when_the_mail_server_was_down(
    tasks_inline, host, image, alice, tenant_a, settings
):
    # given: two instances past their allowance, and nothing listening on the SMTP port
    flavor = priced_flavor("metered", traffic_gb=1, policy=OverPolicy.BILL)
    first = create(alice, tenant_a, image, "first", flavor, at(2026, 3, 1))
    second = create(alice, tenant_a, image, "second", flavor, at(2026, 3, 1, 1))
    sample(host, at(2026, 3, 2), (first, 2 * GIB), (second, 2 * GIB))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", closed_port, 2

    # when
    down = metering.enforce_allowances(host=host, now=at(2026, 3, 2))

    # then: nothing counted as sent while the server is down
    assert down["notified"] == [] and not TrafficNotice.objects.exists()

    # when: it is back
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    back = metering.enforce_allowances(host=host, now=at(2026, 3, 2, 0, 1))

    # then: all four notices, once
    assert sorted(back["notified"]) == sorted(f"{i.pk}:{level}" for i in (first, second) for level in (80, 100))
    assert len(mail.outbox) == 4


def test_it_mails_about_an_instance_whose_name_has_a_line_break(tasks_inline, host, image, alice, tenant_a):
    # given: names are the tenant's free text; a mail header cannot hold a line break
    instance = create(alice, tenant_a, image, "web\nbox", priced_flavor("metered", traffic_gb=1), at(2026, 3, 1))
    sample(host, at(2026, 3, 2), (instance, GIB))

    # when
    notified = metering.enforce_allowances(host=host, now=at(2026, 3, 2))["notified"]

    # then
    assert notified == [f"{instance.pk}:80", f"{instance.pk}:100"]
    assert [m.subject for m in mail.outbox] == [
        "[Cloud Portal] Instance web box: 80% of its monthly traffic used",
        "[Cloud Portal] Instance web box: 100% of its monthly traffic used",
    ]


def test_it_mails_the_traffic_notice_in_the_language_of_the_billing_addresses_user(
    tasks_inline, host, image, alice, tenant_a
):
    # given: the billing address is alice's, and she reads Chinese
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    flavor = priced_flavor("metered-zh", traffic_gb=10, policy=OverPolicy.BILL)
    instance = create(alice, tenant_a, image, "web", flavor, at(2026, 3, 1))

    # when: 80% of the allowance is used
    sample(host, at(2026, 3, 3), (instance, 8 * GIB))
    metering.enforce_allowances(host=host, now=at(2026, 3, 3))

    # then: the notice is in Chinese
    (notice,) = mail.outbox
    assert notice.subject == "[Cloud Portal] 实例 web：已用掉每月流量的 80%"
    assert "本月已发送 8 GiB" in notice.body and "按 GiB 计费" in notice.body
