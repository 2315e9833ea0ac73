"""Monthly invoices: generated idempotently, then issued, paid or voided.

Generating a month again gives the same invoice: an issued (or paid) one is returned as it
is; a draft is rebuilt from the same usage, which gives the same lines. SLA credits earned in
a month are applied to the next month's invoice.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import prices as price_lookup
from billing import rating, sla, usage
from billing.models import BillingAccount, Invoice, InvoiceCounter, InvoiceLine, UsageRecord
from billing.money import ZERO, cents
from compute.models import HostStatusLog, Instance, InstanceStateLog
from portal.api import ConflictError
from tenants.models import Tenant
from tenants.services import audit

K = InvoiceLine.Kind


def month_bounds(period: date) -> tuple[datetime, datetime]:
    start = datetime(period.year, period.month, 1, tzinfo=UTC)
    days = calendar.monthrange(period.year, period.month)[1]
    return start, start + timedelta(days=days)


def previous_month(period: date) -> date:
    return (period.replace(day=1) - timedelta(days=1)).replace(day=1)


def month_lines(*, tenant: Tenant, period: date) -> list[rating.Line]:
    """The usage lines of a tenant's month, from its stored hourly usage."""
    start, end = month_bounds(period)
    prices = price_lookup.price_list()
    records = UsageRecord.objects.filter(tenant=tenant, hour__gte=start, hour__lt=end).values(
        "instance_id", "segments", "tx_bytes"
    )
    segments, traffic = defaultdict(list), defaultdict(int)
    for record in records:
        segments[record["instance_id"]].append(record["segments"])
        traffic[record["instance_id"]] += record["tx_bytes"]
    instances = Instance.objects.in_bulk(list(segments))
    flavors = price_lookup.flavors_by_id()
    lines = []
    for instance_id in sorted(segments, key=str):
        lines += rating.rate_instance(
            instance=instances[instance_id],
            segment_lists=segments[instance_id],
            tx_bytes=traffic[instance_id],
            period_seconds=int((end - start).total_seconds()),
            prices=prices,
            flavors=flavors,
        )
    return lines


def sla_credit_lines(*, tenant: Tenant, period: date) -> list[rating.Line]:
    """Credits earned in `period`, as negative lines (they go on the following invoice)."""
    start, end = month_bounds(period)
    # Only instances with recorded trouble can have lost availability (read once per run).
    troubled_hosts, failed = price_lookup.remember(("sla-trouble", end), lambda: _trouble_before(end))
    candidates = (
        Instance.objects.filter(tenant=tenant, created_at__lt=end)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gte=start))
        .filter(Q(host_id__in=troubled_hosts) | Q(pk__in=failed))
    )
    lines = []
    charged = None
    for instance in candidates.order_by("created_at", "id"):
        measured = sla.availability(instance, start, end)
        percent = sla.credit_percent(instance.sla_percent, measured.percent)
        if not percent:
            continue
        if charged is None:
            charged = defaultdict(lambda: ZERO)
            for line in month_lines(tenant=tenant, period=period):
                if line.kind != K.OVERAGE:
                    charged[line.instance_id] += line.amount
        base = charged[instance.pk]
        if not base:
            continue
        credit = cents(base * percent / 100)
        lines.append(
            rating.Line(
                K.SLA_CREDIT,
                f"{instance.name}: SLA credit {percent}% for {period:%B %Y} "
                f"(availability {measured.percent}%, {measured.downtime_seconds} s down)",
                percent,
                "percent",
                -base / 100,
                -credit,
                instance.pk,
                {
                    "month": f"{period:%Y-%m}",
                    "availability": str(measured.percent),
                    "sla": str(instance.sla_percent),
                    "downtime_seconds": measured.downtime_seconds,
                    "meant_seconds": measured.meant_seconds,
                    "credited_of": str(base),
                },
            )
        )
    return lines


def _trouble_before(end: datetime) -> tuple[set, set]:
    hosts = set(HostStatusLog.objects.filter(at__lt=end, status="down").values_list("host_id", flat=True))
    failed = set(
        InstanceStateLog.objects.filter(at__lt=end, state="error", cause="system").values_list("instance_id", flat=True)
    )
    return hosts, failed


def tax_rate_of(tenant: Tenant):
    account = BillingAccount.objects.filter(tenant=tenant).first()
    return account.tax_rate if account else ZERO


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
    lines = month_lines(tenant=tenant, period=period) + sla_credit_lines(tenant=tenant, period=previous_month(period))
    if not lines and existing is None:
        return None
    subtotal = sum((line.amount for line in lines), ZERO)
    tax_rate = tax_rate_of(tenant)
    tax = cents(subtotal * tax_rate)
    with transaction.atomic():
        if existing is not None:
            # Issued meanwhile (a second delivery of the monthly run)? Then it is final.
            existing = Invoice.objects.select_for_update().get(pk=existing.pk)
            if existing.state != Invoice.State.DRAFT:
                return existing
        invoice = existing or Invoice(tenant=tenant, period=period, currency=price_lookup.price_list().currency)
        invoice.subtotal, invoice.tax_rate, invoice.tax, invoice.total = subtotal, tax_rate, tax, subtotal + tax
        try:
            with transaction.atomic():
                invoice.save()
        except IntegrityError:  # a concurrent first generate of the same month won
            return Invoice.objects.exclude(state=Invoice.State.VOID).get(tenant=tenant, period=period)
        invoice.lines.all().delete()
        InvoiceLine.objects.bulk_create(
            [
                InvoiceLine(
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
                for line in lines
            ]
        )
    return invoice


def invoice_issue(*, invoice: Invoice) -> Invoice:
    """Freeze a draft: it gets its number and due date and never changes again."""
    prices = price_lookup.price_list()
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.state == Invoice.State.ISSUED:
            return locked
        if locked.state != Invoice.State.DRAFT:
            raise ConflictError(f"Only a draft invoice can be issued; this one is {locked.state}.")
        # Numbers run without gaps per month; the month's counter row orders them.
        InvoiceCounter.objects.get_or_create(period=locked.period)
        counter = InvoiceCounter.objects.select_for_update().get(period=locked.period)
        counter.last += 1
        counter.save(update_fields=["last"])
        now = timezone.now()
        locked.number = f"INV-{locked.period:%Y%m}-{counter.last:05d}"
        locked.issued_at = now
        locked.due_at = now + timedelta(days=prices.payment_days)
        # Nothing to pay (credits outweigh charges): it is settled as it is issued.
        locked.state = Invoice.State.ISSUED if locked.total > 0 else Invoice.State.PAID
        locked.paid_at = None if locked.total > 0 else now
        locked.save(update_fields=["state", "issued_at", "due_at", "number", "paid_at"])
        audit(None, "invoice.issue", tenant=locked.tenant, target=locked.number, total=str(locked.total))
    return locked


def invoice_mark_paid(*, invoice: Invoice) -> Invoice:
    updated = Invoice.objects.filter(pk=invoice.pk, state=Invoice.State.ISSUED).update(
        state=Invoice.State.PAID, paid_at=timezone.now()
    )
    invoice.refresh_from_db()
    if not updated and invoice.state != Invoice.State.PAID:
        raise ConflictError(f"Only an issued invoice can be paid; this one is {invoice.state}.")
    if updated:
        audit(None, "invoice.paid", tenant=invoice.tenant, target=invoice.number, total=str(invoice.total))
    return invoice


def invoice_void(*, invoice: Invoice) -> Invoice:
    updated = Invoice.objects.filter(pk=invoice.pk, state__in=[Invoice.State.DRAFT, Invoice.State.ISSUED]).update(
        state=Invoice.State.VOID
    )
    invoice.refresh_from_db()
    if not updated and invoice.state != Invoice.State.VOID:
        raise ConflictError(f"A {invoice.state} invoice cannot be voided.")
    if updated:
        audit(None, "invoice.void", tenant=invoice.tenant, target=invoice.number or str(invoice.pk))
    return invoice


def run_month(*, period: date, issue: bool = True) -> dict:
    """Invoice every tenant that had usage in the month (or SLA credit from the one before)."""
    period = period.replace(day=1)
    start, end = month_bounds(period)
    minimum = price_lookup.price_list().minimum_seconds
    usage.aggregate(start=start, end=end, minimum_seconds=minimum)
    before_start, before_end = month_bounds(previous_month(period))
    usage.aggregate(start=before_start, end=before_end, minimum_seconds=minimum)  # for SLA credits
    # Last month's tenants too: one may have only a credit to receive (no invoice if it has none).
    tenants = set(
        UsageRecord.objects.filter(hour__gte=before_start, hour__lt=end).values_list("tenant_id", flat=True).distinct()
    )
    report = {"invoices": 0, "total": ZERO}
    with price_lookup.cached():
        for tenant in Tenant.objects.filter(pk__in=tenants).order_by("pk"):
            invoice = invoice_generate(tenant=tenant, period=period, aggregate=False)
            if invoice is None:
                continue
            if issue and invoice.state == Invoice.State.DRAFT:
                invoice = invoice_issue(invoice=invoice)
            report["invoices"] += 1
            report["total"] += invoice.total
    return report


def revenue(*, period: date) -> dict:
    """Invoiced and unpaid totals of a month, for operators."""
    invoices = Invoice.objects.filter(period=period.replace(day=1)).exclude(state=Invoice.State.VOID)
    issued = invoices.filter(state__in=[Invoice.State.ISSUED, Invoice.State.PAID]).aggregate(s=Sum("total"))["s"]
    unpaid = invoices.filter(state=Invoice.State.ISSUED).aggregate(s=Sum("total"))["s"]
    return {"invoiced": issued or ZERO, "unpaid": unpaid or ZERO}
