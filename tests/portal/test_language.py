"""The interface language: the switcher's choice kept in a cookie and, for a logged-in user, on
their row, which then wins over the browser's wish everywhere they log in; mails go out in the
language of the tenant's owner."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from billing import invoicing
from billing import notices as billing_notices
from billing.models import Invoice
from tests.ui.conftest import browser_client, post

pytestmark = pytest.mark.django_db


def test_it_follows_the_browser_until_a_language_is_chosen(db):
    assert Client().get("/flavors/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").headers["Content-Language"] == "zh-hans"
    page = Client().get("/flavors/", HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert '<html lang="en"' in page and 'value="zh-hans"' in page  # the switcher offers Chinese


def test_it_saves_a_logged_in_users_choice_and_applies_it_at_the_next_login(alice, tenant_a, settings):
    # when: alice switches with the navbar's form
    client = browser_client(alice)
    response = post(client, "/i18n/setlang/", {"language": "zh-hans", "next": "/instances/"})

    # then: back on the page, the cookie set and the choice on her row
    assert response.status_code == 302 and response["Location"] == "/instances/"
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    alice.refresh_from_db()
    assert alice.language == "zh-hans"
    assert "实例" in client.get("/instances/").content.decode()

    # when: she logs in from a browser that asks for English and has no cookie
    other = Client()
    other.force_login(alice)
    response = other.get("/instances/", HTTP_ACCEPT_LANGUAGE="en-US")

    # then: her choice wins, and the browser gets the cookie for the pages after logout
    assert response.headers["Content-Language"] == "zh-hans"
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"


def test_it_changes_the_language_only_by_a_form_and_to_one_it_offers(alice, tenant_a):
    client = browser_client(alice)
    post(client, "/i18n/setlang/", {"language": "fr", "next": "/instances/"})
    client.get("/i18n/setlang/?language=zh-hans")  # a link changes nothing
    assert browser_client(alice).post("/i18n/setlang/", {"language": "zh-hans"}).status_code == 403  # no CSRF token
    alice.refresh_from_db()
    assert alice.language == ""


def test_it_mails_a_tenant_in_its_owners_language(alice, tenant_a):
    # given: an owner who chose Chinese, and an invoice issued to her tenant
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    invoice = Invoice.objects.create(
        tenant=tenant_a, period=timezone.now().date().replace(day=1), currency="EUR", total=Decimal("1234.5")
    )
    invoice = invoicing.invoice_issue(invoice=invoice)
    mail.outbox.clear()

    # when
    billing_notices.send_invoices_issued(since=timezone.now() - timezone.timedelta(hours=1))

    # then: subject, body and footer in Chinese, numbers and dates in Chinese form
    (message,) = mail.outbox
    period = f"{invoice.period.year}年{invoice.period.month}月"
    assert message.subject == f"[Cloud Portal] 发票 {invoice.number}（{period}）：1,234.50 EUR"
    assert message.body.startswith("您好：") and "合计：1,234.50 EUR（含税）" in message.body
    assert f"付款截止日期：{invoice.due_at.year}年" in message.body and "您收到此邮件" in message.body
