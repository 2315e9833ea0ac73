"""Monthly invoices: idempotent generation, draft -> issued -> paid or void, CSV and PDF exports,
and what operators see in the admin."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import translation

from base.errors import Conflict
from billing import exports, invoice_lines, invoicing, rating
from billing.models import BillingAccount, Invoice, InvoiceLine, SlaTier
from compute import services, upkeep
from tests.billing.conftest import GIB, act, at, create, pdf_pages, priced_flavor, sample
from tests.hostfaults import hypervisor_unreachable, worker_silent_since

MARCH = at(2026, 3, 1).date()
AFTER_MARCH = at(2026, 4, 1, 0, 30)


def generate(tenant, when=AFTER_MARCH) -> Invoice:
    with time_machine.travel(when, tick=False):
        return invoicing.invoice_generate(tenant=tenant, period=MARCH)


def content(invoice: Invoice) -> list[tuple]:
    return list(invoice.lines.values_list("kind", "description", "quantity", "unit", "unit_price", "amount", "detail"))


def totals(invoice: Invoice) -> tuple[Decimal, Decimal, Decimal]:
    invoice.refresh_from_db()
    return invoice.subtotal, invoice.tax, invoice.total


@pytest.fixture
def march(tasks_inline, host, image, alice, tenant_a):
    """Tenant A's March: one instance running all month (capped 5.00), one stopped for half of it."""
    web = create(alice, tenant_a, image, "web", priced_flavor("small", traffic_gb=1), at(2026, 3, 1))
    db = create(alice, tenant_a, image, "db", priced_flavor("large", hourly="0.020", cap="10.00"), at(2026, 3, 1))
    act(services.instance_stop, alice, tenant_a, db, at(2026, 3, 16, 12))
    return {"host": host, "web": web, "db": db}


def test_it_generates_the_same_invoice_and_lines_twice(march, tenant_a):
    # when
    first = generate(tenant_a)
    lines = content(first)
    second = generate(tenant_a, AFTER_MARCH + timedelta(hours=5))

    # then: 744 h capped at 5.00; 372 h x 0.020 = 7.44 and 372 h of a 10 GiB disk
    assert second.pk == first.pk and second.state == Invoice.State.DRAFT
    assert content(second) == lines
    assert sorted(amount for *_rest, amount, _detail in lines) == [Decimal("0.25"), Decimal("5.00"), Decimal("7.44")]
    assert totals(second) == (Decimal("12.69"), Decimal("0.00"), Decimal("12.69"))
    assert Invoice.objects.count() == 1


def test_it_rebuilds_a_draft_from_its_month_usage(march, tenant_a):
    draft = generate(tenant_a)

    # when: traffic of March arrives late (3 GiB, 1 GiB included, 0.02 per GiB)
    sample(march["host"], at(2026, 3, 31, 23), (march["web"], 3 * GIB))
    rebuilt = generate(tenant_a)

    # then: the same draft, now with the overage
    assert rebuilt.pk == draft.pk
    assert rebuilt.lines.get(kind=InvoiceLine.Kind.OVERAGE).amount == Decimal("0.04")
    assert totals(rebuilt) == (Decimal("12.73"), Decimal("0.00"), Decimal("12.73"))


def test_it_issues_a_draft_with_a_number_and_a_due_date(march, tenant_a):
    draft = generate(tenant_a)

    # when
    with time_machine.travel(at(2026, 4, 2, 9), tick=False):
        issued = invoicing.invoice_issue(invoice=draft)
        again = invoicing.invoice_issue(invoice=draft)

    # then
    assert issued.state == Invoice.State.ISSUED
    assert issued.number == "INV-202603-00001"  # numbered without gaps within the month
    assert (issued.issued_at, issued.due_at) == (at(2026, 4, 2, 9), at(2026, 4, 16, 9))
    assert (again.pk, again.number, again.due_at) == (issued.pk, issued.number, issued.due_at)


def test_it_never_changes_an_issued_invoice_even_when_usage_changes(march, tenant_a):
    issued = invoicing.invoice_issue(invoice=generate(tenant_a))
    lines, figures = content(issued), totals(issued)

    # when: late March traffic, then the month generated and run again
    sample(march["host"], at(2026, 3, 31, 23), (march["web"], 50 * GIB))
    regenerated = generate(tenant_a, at(2026, 4, 3))
    with time_machine.travel(at(2026, 4, 3), tick=False):
        invoicing.run_month(period=MARCH)

    # then
    assert regenerated.pk == issued.pk and regenerated.state == Invoice.State.ISSUED
    assert content(regenerated) == lines
    assert totals(regenerated) == figures
    assert Invoice.objects.count() == 1


def test_it_marks_an_issued_invoice_paid_once(march, tenant_a):
    issued = invoicing.invoice_issue(invoice=generate(tenant_a))

    # when
    with time_machine.travel(at(2026, 4, 10), tick=False):
        paid = invoicing.invoice_mark_paid(invoice=issued)
    with time_machine.travel(at(2026, 4, 11), tick=False):
        again = invoicing.invoice_mark_paid(invoice=issued)

    # then
    assert (paid.state, paid.paid_at) == (Invoice.State.PAID, at(2026, 4, 10))
    assert (again.state, again.paid_at) == (Invoice.State.PAID, at(2026, 4, 10))
    assert generate(tenant_a, at(2026, 4, 12)).state == Invoice.State.PAID


def test_it_voids_drafts_and_issued_invoices_and_generates_anew_after(march, tenant_a):
    draft = generate(tenant_a)
    assert invoicing.invoice_void(invoice=draft).state == Invoice.State.VOID
    issued = invoicing.invoice_issue(invoice=generate(tenant_a))
    assert issued.pk != draft.pk

    # when
    voided = invoicing.invoice_void(invoice=issued)
    again = invoicing.invoice_void(invoice=issued)
    fresh = generate(tenant_a)

    # then: the voided ones stay as they were, and the month gets a new draft
    assert (voided.state, again.state) == (Invoice.State.VOID, Invoice.State.VOID)
    assert fresh.pk not in (draft.pk, issued.pk) and fresh.state == Invoice.State.DRAFT
    assert content(fresh) == content(issued)
    assert Invoice.objects.filter(state=Invoice.State.VOID).count() == 2


def test_it_refuses_illegal_transitions_with_a_conflict(march, tenant_a):
    draft = generate(tenant_a)
    paid = invoicing.invoice_mark_paid(invoice=invoicing.invoice_issue(invoice=draft))
    april = Invoice.objects.create(tenant=tenant_a, period=at(2026, 4, 1).date(), currency="EUR")
    void = invoicing.invoice_void(invoice=april)
    may = Invoice.objects.create(tenant=tenant_a, period=at(2026, 5, 1).date(), currency="EUR")

    # when / then
    refusals = [
        (invoicing.invoice_issue, paid),
        (invoicing.invoice_void, paid),
        (invoicing.invoice_issue, void),
        (invoicing.invoice_mark_paid, void),
        (invoicing.invoice_mark_paid, may),
    ]
    for transition, invoice in refusals:
        before = Invoice.objects.get(pk=invoice.pk).state
        with pytest.raises(Conflict) as refused:
            transition(invoice=invoice)
        assert refused.value.code == "conflict"
        assert Invoice.objects.get(pk=invoice.pk).state == before


def test_it_exports_csv_with_lines_totals_and_neutralised_formulas(tasks_inline, host, image, alice, tenant_a):
    # given: instance names are the tenant's own text
    small = priced_flavor("small")
    for name in ("=cmd()", "+1", "@SUM(A1)", "\t=calc()", "plain"):
        create(alice, tenant_a, image, name, small, at(2026, 3, 1))
    invoice = invoicing.invoice_issue(invoice=generate(tenant_a))

    # when
    rows = list(csv.reader(io.StringIO(exports.invoice_csv(invoice))))

    # then
    assert rows[0] == exports.CSV_FIELDS
    assert rows[0][2:4] == ["kind", "description"] and rows[0][-2:] == ["amount", "currency"]
    body, tail = rows[1:-3], rows[-3:]
    assert len(body) == 5
    assert sorted(row[3] for row in body) == [
        "'\t=calc(): small, 744.000000 h",
        "'+1: small, 744.000000 h",
        "'=cmd(): small, 744.000000 h",
        "'@SUM(A1): small, 744.000000 h",
        "plain: small, 744.000000 h",
    ]
    assert all(row[:3] == [invoice.number, "2026-03", "running"] and row[7] == "5.00" for row in body)
    assert all(row[8] == "EUR" for row in rows[1:])
    assert [(row[2], row[7]) for row in tail] == [("subtotal", "25.00"), ("tax", "0.00"), ("total", "25.00")]


def test_it_exports_a_well_formed_pdf_with_escaped_text(tasks_inline, host, image, alice, tenant_a):
    # given: a name with PDF string delimiters and a backslash
    create(alice, tenant_a, image, r"web (eu) \ main", priced_flavor("small"), at(2026, 3, 1))
    invoice = invoicing.invoice_issue(invoice=generate(tenant_a))

    # when
    text = "\n".join(pdf_pages(exports.invoice_pdf(invoice)))

    # then
    assert r"web (eu) \ main: small, 744.000000 h" in text
    assert f"Invoice {invoice.number}" in text and "Total: 5.00 EUR" in text


def test_it_writes_chinese_names_and_labels_in_the_pdf(tasks_inline, host, image, alice, tenant_a):
    # given: a tenant with a Chinese name, and a reader of Chinese
    tenant_a.name = "北京云计算有限公司"
    tenant_a.save(update_fields=["name"])
    create(alice, tenant_a, image, "网站服务器", priced_flavor("small"), at(2026, 3, 1))
    invoice = invoicing.invoice_issue(invoice=generate(tenant_a))

    # when
    with translation.override("zh-hans"):
        text = "\n".join(pdf_pages(exports.invoice_pdf(invoice)))

    # then: the name as written (no "?"), Chinese labels, the period in Chinese form
    assert "北京云计算有限公司" in text and "网站服务器" in text and "?" not in text
    assert f"发票 {invoice.number}" in text and "合计：5.00 EUR" in text
    assert "账期：2026年3月" in text and "状态：已开具" in text


def test_it_spreads_a_long_invoice_over_pages(db, tenant_a):
    invoice = Invoice.objects.create(tenant=tenant_a, period=MARCH, currency="EUR", total=Decimal("70.00"))
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            kind=InvoiceLine.Kind.RUNNING,
            description=f"instance-{n}: small, 100.000000 h",
            quantity=Decimal(100),
            unit="hour",
            unit_price=Decimal("0.01"),
            amount=Decimal("1.00"),
        )
        for n in range(70)
    )

    # when
    pages = pdf_pages(exports.invoice_pdf(invoice))

    # then: 4 + 140 + 4 rows at 60 a page
    assert len(pages) == 3
    assert "instance-69: small, 100.000000 h" in pages[2] and "Total: 70.00 EUR" in pages[2]


def test_it_shows_operators_revenue_and_unpaid_invoices(march, tenant_a, tenant_b, client, operator):
    # given: A's March issued (12.69) and a paid invoice of B's (3.00)
    invoicing.invoice_issue(invoice=generate(tenant_a))
    paid = Invoice.objects.create(tenant=tenant_b, period=MARCH, currency="EUR", total=Decimal("3.00"))
    invoicing.invoice_mark_paid(invoice=invoicing.invoice_issue(invoice=paid))
    operator.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    client.force_login(operator)

    # when
    page = client.get(reverse("admin:billing_invoice_changelist"))

    # then
    assert invoicing.revenue(period=MARCH) == {"invoiced": Decimal("15.69"), "unpaid": Decimal("12.69")}
    assert page.status_code == 200
    assert "Invoices: revenue 15.69 EUR, unpaid 12.69 EUR" in page.content.decode()


def test_it_applies_an_sla_credit_to_the_next_invoice_even_without_usage_then(
    tasks_inline, host, image, alice, tenant_a
):
    # given: March's only instance had its host down for two days (93.5%: the 100% tier)
    SlaTier.objects.create(sla_percent=Decimal("99.900"), below=Decimal("95"), credit_percent=Decimal("100"))
    web = create(alice, tenant_a, image, "web", priced_flavor("small"), at(2026, 3, 1))
    worker_silent_since(host, at(2026, 3, 9, 23, 50))
    with time_machine.travel(at(2026, 3, 10), tick=False), hypervisor_unreachable(host):
        upkeep.check_silent_hosts()
    with time_machine.travel(at(2026, 3, 12), tick=False):
        upkeep.heartbeat(host.pk)
    act(services.instance_delete, alice, tenant_a, web, at(2026, 3, 31, 23))
    with time_machine.travel(AFTER_MARCH, tick=False):
        invoicing.run_month(period=MARCH)

    # when: April, with no usage at all
    with time_machine.travel(at(2026, 5, 1, 0, 30), tick=False):
        report = invoicing.run_month(period=at(2026, 4, 1).date())

    # then: March's 5.00 credited in full on an April invoice, and carried on, not lost
    april = Invoice.objects.get(tenant=tenant_a, period=at(2026, 4, 1).date())
    assert [(line.kind, line.amount) for line in april.lines.order_by("id")] == [
        ("sla_credit", Decimal("-5.00")),
        ("carried_out", Decimal("5.00")),
    ]
    # nothing to pay: settled as it is issued, so it never counts as unpaid
    assert (april.state, april.total) == (Invoice.State.PAID, Decimal("0.00"))
    assert april.number and april.paid_at is not None
    assert report == {"invoices": 1, "total": Decimal("0.00")}


def test_it_takes_a_carried_credit_off_the_next_charges_before_tax(tasks_inline, host, image, alice, tenant_a):
    # given: March's credits exceed its charges by 3.00; the tenant pays 19% tax
    BillingAccount.objects.create(tenant=tenant_a, tax_rate=Decimal("0.19"))

    def line(kind, amount):
        return rating.Line(
            kind=kind,
            description=kind,
            quantity=Decimal(1),
            unit="x",
            unit_price=Decimal(amount),
            amount=Decimal(amount),
        )

    march = invoicing.write_invoices(
        period=MARCH,
        lines={tenant_a.pk: [line("running", "5.00"), line("sla_credit", "-8.00")]},
        tenant_ids=[tenant_a.pk],
        issue=True,
    )[tenant_a.pk]
    # when: April has 10.00 of charges
    carried = invoice_lines.carried_in_lines(period=at(2026, 4, 1).date())[tenant_a.pk]
    april = invoicing.write_invoices(
        period=at(2026, 4, 1).date(),
        lines={tenant_a.pk: [line("running", "10.00"), *carried]},
        tenant_ids=[tenant_a.pk],
        issue=True,
    )[tenant_a.pk]
    # then: March owes nothing and no tax; April is taxed on 10.00 - 3.00
    assert (march.subtotal, march.tax, march.total, march.state) == (Decimal("0"), Decimal("0"), 0, "paid")
    assert [(c.kind, c.amount) for c in carried] == [("carried_in", Decimal("-3.00"))]
    assert carried[0].description == f"Credit carried from invoice {march.number}"
    assert (april.subtotal, april.tax, april.total) == (Decimal("7.00"), Decimal("1.33"), Decimal("8.33"))
