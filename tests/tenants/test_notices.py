"""E-mail notices: each event told once, after commit, to the right people, with a footer that
links to the settings page (no one-click unsubscribe); the activity log shows a tenant its own
events only."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from billing import invoicing, suspension
from billing import notices as billing_notices
from billing.models import Invoice
from compute import history
from compute import notices as compute_notices
from compute.models import Host, Instance, InstanceState
from tenants.models import Notice, NoticeSettings
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db


def send_all() -> int:
    return billing_notices.send_pending() + compute_notices.send_pending()


def test_it_mails_each_event_once_to_the_right_people(alice, bob, tenant_a, charlie, tenant_b, host, make_instance):
    # given: an issued invoice, an instance gone to error, a host outage and a suspension
    web = make_instance("web-1")
    invoice = Invoice.objects.create(
        tenant=tenant_a, period=timezone.now().date().replace(day=1), currency="EUR", total=Decimal("12.5")
    )
    invoicing.invoice_issue(invoice=invoice)
    Instance.objects.filter(pk=web.pk).update(state=InstanceState.ERROR, error_step="start")
    history.record_state(web.pk, InstanceState.ERROR, cause="system")
    history.set_host_status([host.pk], Host.Status.DOWN)
    suspension.tenant_suspend(actor=None, tenant=tenant_a, reason="Unpaid invoice.")
    mail.outbox.clear()

    # when: the beat task runs twice
    first = send_all()
    second = send_all()

    # then: four notices, once each, none to tenant B's owner
    assert (first, second) == (4, 0)
    subjects = sorted(m.subject for m in mail.outbox)
    assert subjects == sorted(
        [
            f"[Cloud Portal] Invoice {Invoice.objects.get(pk=invoice.pk).number} for {invoice.period:%B %Y}: 12.50 EUR",
            "[Cloud Portal] Instance web-1 is in error",
            "[Cloud Portal] Outage: 1 instance of Tenant A cannot be reached",
            "[Cloud Portal] Tenant A is suspended",
        ]
    )
    by_subject = {m.subject: m for m in mail.outbox}
    invoice_mail = next(m for s, m in by_subject.items() if "Invoice" in s)
    assert invoice_mail.to == ["alice@example.com"]  # billing: owners only
    error_mail = by_subject["[Cloud Portal] Instance web-1 is in error"]
    assert sorted(error_mail.to) == ["alice@example.com", "bob@example.com"]
    assert all("charlie@example.com" not in m.to for m in mail.outbox)
    for message in mail.outbox:
        assert "/account/notifications" in message.body and "unsubscribe" not in message.body.lower()
        assert "127.0.0.1:8000]" not in message.subject
    assert Notice.objects.filter(tenant=tenant_a).count() == 4


def test_it_leaves_out_people_who_turned_a_topic_off(alice, bob, tenant_a, host, make_instance):
    web = make_instance("web-1")
    client = browser_client(bob)
    assert client.get("/account/notifications").status_code == 200
    assert post(client, "/account/notifications", {"billing": "on"}).status_code == 302  # incidents off
    assert NoticeSettings.objects.get(user=bob).incidents is False
    history.record_state(web.pk, InstanceState.ERROR, cause="system")
    mail.outbox.clear()

    compute_notices.send_pending()

    assert [m.to for m in mail.outbox] == [["alice@example.com"]]


def test_it_shows_a_tenant_its_own_activity_and_nobody_elses(alice, tenant_a, charlie, tenant_b, make_instance):
    # given: alice creates and renames an instance; charlie creates one of his own
    web = make_instance("web-1")
    client = browser_client(alice)
    assert post(client, f"/instances/{web.pk}/edit", {"name": "web-renamed", "tags": "prod web"}).status_code == 302
    theirs = browser_client(charlie)
    post(theirs, "/tenant/ssh-keys", {"name": "charlies-key", "public_key": "x"})

    # when
    page = client.get("/tenant/activity").content.decode()
    other = theirs.get("/tenant/activity").content.decode()

    # then
    assert 'data-action="instance.create"' in page and 'data-action="instance.rename"' in page
    assert "web-renamed" in page and "alice@example.com" in page
    assert "web-renamed" not in other and 'data-action="instance.rename"' not in other
