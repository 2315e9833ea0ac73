"""Monthly invoices: generated idempotently, then issued, paid or voided.

Generating a month again gives the same invoice: an issued (or paid) one is returned as it
is; a draft is rebuilt from the same usage, which gives the same lines. SLA credits earned in
a month are applied to the next month's invoice.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from base.errors import Conflict
from billing import invoice_lines, rating, usage
from billing import prices as price_lookup
from billing.models import BillingAccount, Invoice, InvoiceCounter, InvoiceLine
from billing.money import ZERO, cents
from billing.periods import month_bounds, previous_month
from tenants.access import Actor
from tenants.models import AuditEvent, Tenant
from tenants.services import audit

K = InvoiceLine.Kind


# Tenants written per transaction by the monthly run: few enough to keep locks short, many
# enough that the per-transaction queries do not dominate.
BATCH = 500


def _lock_counter(period: date) -> InvoiceCounter:
    """The month's counter row, locked: every write of a month's invoices holds it, so runs,
    single generations and issues of one month never interleave."""
    InvoiceCounter.objects.get_or_create(period=period)
    return InvoiceCounter.objects.select_for_update().get(period=period)


ISSUE_FIELDS = ["state", "issued_at", "due_at", "number", "paid_at"]
# An invoice's state as a word in a refusal: in English the code itself, as the API shows it.
STATE_WORDS = {
    Invoice.State.DRAFT: pgettext_lazy("invoice state", "draft"),
    Invoice.State.ISSUED: pgettext_lazy("invoice state", "issued"),
    Invoice.State.PAID: pgettext_lazy("invoice state", "paid"),
    Invoice.State.VOID: pgettext_lazy("invoice state", "void"),
}


def state_word(state: str) -> str:
    return str(STATE_WORDS.get(state, state))


def _number(invoices: list[Invoice], counter: InvoiceCounter) -> None:
    """Issue drafts under the locked counter: numbers without gaps, in the order given. Sets
    ISSUE_FIELDS on the objects (the caller saves them) and records the audit rows."""
    if not invoices:
        return
    prices = price_lookup.price_list()
    now = timezone.now()
    for invoice in invoices:
        counter.last += 1
        invoice.number = f"INV-{invoice.period:%Y%m}-{counter.last:05d}"
        invoice.issued_at = now
        invoice.due_at = now + timedelta(days=prices.payment_days)
        # Nothing to pay (credits outweigh charges): it is settled as it is issued.
        invoice.state = Invoice.State.ISSUED if invoice.total > 0 else Invoice.State.PAID
        invoice.paid_at = None if invoice.total > 0 else now
    counter.save(update_fields=["last"])
    AuditEvent.objects.bulk_create(
        AuditEvent(tenant_id=i.tenant_id, action="invoice.issue", target=i.number, detail={"total": str(i.total)})
        for i in invoices
    )


def _line_row(invoice: Invoice, line: rating.Line) -> InvoiceLine:
    return InvoiceLine(
        invoice=invoice,
        instance_id=line.instance_id,
        kind=line.kind,
        description=line.description[:300],
        quantity=line.quantity,
        unit=line.unit,
        unit_price=line.unit_price.quantize(rating.SIX),
        amount=line.amount,
        detail=line.detail,
    )


def write_invoices(*, period: date, lines: dict, tenant_ids, issue: bool) -> dict:
    """tenant id -> its invoice for `period`: drafts made or rebuilt from `lines` (a tenant
    with no lines and no invoice gets none), issued ones returned as they are; with `issue`,
    the drafts are issued too. Tenants in id order, BATCH per transaction."""
    currency = price_lookup.price_list().currency
    ordered = sorted(tenant_ids, key=str)
    taxes = dict(BillingAccount.objects.filter(tenant_id__in=ordered).values_list("tenant_id", "tax_rate"))
    result = {}
    for first in range(0, len(ordered), BATCH):
        chunk = ordered[first : first + BATCH]
        with transaction.atomic():
            counter = _lock_counter(period)
            existing = {
                invoice.tenant_id: invoice
                for invoice in Invoice.objects.filter(period=period, tenant_id__in=chunk).exclude(
                    state=Invoice.State.VOID
                )
            }
            new, rebuilt, rows = [], [], []
            for tenant_id in chunk:
                invoice, tenant_lines = (
                    existing.get(tenant_id),
                    invoice_lines.carry_out(lines.get(tenant_id, []), period),
                )
                if invoice is not None and invoice.state != Invoice.State.DRAFT:
                    result[tenant_id] = invoice
                    continue
                if invoice is None and not tenant_lines:
                    continue
                if invoice is None:
                    invoice = Invoice(tenant_id=tenant_id, period=period, currency=currency)
                    new.append(invoice)
                else:
                    rebuilt.append(invoice)
                subtotal = sum((line.amount for line in tenant_lines), ZERO)
                tax_rate = taxes.get(tenant_id, ZERO)
                tax = cents(subtotal * tax_rate)
                invoice.subtotal, invoice.tax_rate, invoice.tax, invoice.total = subtotal, tax_rate, tax, subtotal + tax
                rows += [_line_row(invoice, line) for line in tenant_lines]
                result[tenant_id] = invoice
            if issue:  # numbered before they are written: one INSERT each, no UPDATE after
                _number([*new, *rebuilt], counter)
            Invoice.objects.bulk_create(new)
            if rebuilt:
                totals = ["subtotal", "tax_rate", "tax", "total"]
                Invoice.objects.bulk_update(rebuilt, totals + (ISSUE_FIELDS if issue else []))
                InvoiceLine.objects.filter(invoice__in=rebuilt).delete()
            InvoiceLine.objects.bulk_create(rows, batch_size=2000)
    return result


def invoice_generate(*, tenant: Tenant, period: date, aggregate: bool = True) -> Invoice | None:
    """The month's invoice of a tenant (None when there is nothing to bill)."""
    period = period.replace(day=1)
    start, end = month_bounds(period)
    existing = Invoice.objects.filter(tenant=tenant, period=period).exclude(state=Invoice.State.VOID).first()
    if existing and existing.state != Invoice.State.DRAFT:
        return existing
    if aggregate:
        minimum = price_lookup.price_list().minimum_seconds
        usage.aggregate(start=start, end=min(end, timezone.now()), minimum_seconds=minimum, tenant=tenant)
        before_start, before_end = month_bounds(previous_month(period))
        usage.aggregate(start=before_start, end=before_end, minimum_seconds=minimum, tenant=tenant)
    with price_lookup.cached():
        lines = invoice_lines.bills(period=period, tenant_ids=[tenant.pk])
        return write_invoices(period=period, lines=lines, tenant_ids=[tenant.pk], issue=False).get(tenant.pk)


def invoice_issue(*, invoice: Invoice, actor: Actor | None = None) -> Invoice:
    """Freeze a draft: it gets its number and due date and never changes again."""
    with transaction.atomic():
        counter = _lock_counter(invoice.period)
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.state == Invoice.State.ISSUED:
            return locked
        if locked.state != Invoice.State.DRAFT:
            raise Conflict(
                _("Only a draft invoice can be issued; this one is %(state)s.") % {"state": state_word(locked.state)}
            )
        _number([locked], counter)
        locked.save(update_fields=ISSUE_FIELDS)
        audit(actor, "invoice.issue", tenant=locked.tenant, target=locked.number, total=str(locked.total))
    return locked


def invoice_mark_paid(*, invoice: Invoice, actor: Actor | None = None) -> Invoice:
    updated = Invoice.objects.filter(pk=invoice.pk, state=Invoice.State.ISSUED).update(
        state=Invoice.State.PAID, paid_at=timezone.now()
    )
    invoice.refresh_from_db()
    if not updated and invoice.state != Invoice.State.PAID:
        raise Conflict(
            _("Only an issued invoice can be paid; this one is %(state)s.") % {"state": state_word(invoice.state)}
        )
    if updated:
        audit(actor, "invoice.paid", tenant=invoice.tenant, target=invoice.number, total=str(invoice.total))
    return invoice


def invoice_void(*, invoice: Invoice, actor: Actor | None = None) -> Invoice:
    updated = Invoice.objects.filter(pk=invoice.pk, state__in=[Invoice.State.DRAFT, Invoice.State.ISSUED]).update(
        state=Invoice.State.VOID
    )
    invoice.refresh_from_db()
    if not updated and invoice.state != Invoice.State.VOID:
        raise Conflict(_("A %(state)s invoice cannot be voided.") % {"state": state_word(invoice.state)})
    if updated:
        audit(actor, "invoice.void", tenant=invoice.tenant, target=invoice.number or str(invoice.pk))
    return invoice


def run_month(*, period: date, issue: bool = True) -> dict:
    """Invoice every tenant that had usage in the month (or SLA credit from the one before).

    Hours the hourly task has already made final are read, not computed again; the month's
    usage is summed in the database, and invoices are written BATCH tenants at a time.
    """
    period = period.replace(day=1)
    _start, end = month_bounds(period)
    before_start, _before_end = month_bounds(previous_month(period))
    minimum = price_lookup.price_list().minimum_seconds
    # Last month too: its SLA credits are rated from its usage.
    usage.aggregate_unsettled(start=before_start, end=end, minimum_seconds=minimum)
    with price_lookup.cached():
        lines = invoice_lines.bills(period=period)
        billed = Invoice.objects.filter(period=period).exclude(state=Invoice.State.VOID)
        tenant_ids = set(lines) | set(billed.values_list("tenant_id", flat=True))
        invoices = write_invoices(period=period, lines=lines, tenant_ids=tenant_ids, issue=issue)
    return {"invoices": len(invoices), "total": sum((invoice.total for invoice in invoices.values()), ZERO)}


def revenue(*, period: date) -> dict:
    """Invoiced and unpaid totals of a month, for operators."""
    invoices = Invoice.objects.filter(period=period.replace(day=1)).exclude(state=Invoice.State.VOID)
    issued = invoices.filter(state__in=[Invoice.State.ISSUED, Invoice.State.PAID]).aggregate(s=Sum("total"))["s"]
    unpaid = invoices.filter(state=Invoice.State.ISSUED).aggregate(s=Sum("total"))["s"]
    # Quantized: SQLite sums decimals as floats ("15.6900000000000").
    return {"invoiced": cents(issued or ZERO), "unpaid": cents(unpaid or ZERO)}
