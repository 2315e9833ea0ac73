"""Billing's e-mail notices: an invoice issued, an invoice overdue, a tenant suspended.

Run from beat (billing.tasks.send_notices): each scan looks at committed rows of the last
NOTICE_LOOKBACK_HOURS and tenants.notices.send_once sends each notice once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from billing import prices
from billing.models import Invoice
from tenants import notices
from tenants.models import AuditEvent, Notice


def _billing_url() -> str:
    return f"{settings.PORTAL_BASE_URL}{reverse('tenant-billing')}"


def send_invoices_issued(*, since: datetime) -> int:
    sent = 0
    issued = Invoice.objects.filter(
        state__in=[Invoice.State.ISSUED, Invoice.State.PAID], issued_at__gte=since
    ).select_related("tenant")
    for invoice in issued:
        sent += notices.send_once(
            tenant=invoice.tenant,
            kind=Notice.Kind.INVOICE_ISSUED,
            key=str(invoice.pk),
            topic=notices.BILLING,
            template="invoice_issued",
            context={"invoice": invoice, "billing_url": _billing_url()},
        )
    return sent


def send_invoices_overdue(*, now: datetime, since: datetime) -> int:
    """An issued invoice past its due date that still asks for money, told once."""
    sent = 0
    grace = timedelta(days=prices.price_list().grace_days)
    overdue = Invoice.objects.filter(
        state=Invoice.State.ISSUED, due_at__lt=now, due_at__gte=since, total__gt=0
    ).select_related("tenant")
    for invoice in overdue:
        sent += notices.send_once(
            tenant=invoice.tenant,
            kind=Notice.Kind.INVOICE_OVERDUE,
            key=str(invoice.pk),
            topic=notices.BILLING,
            template="invoice_overdue",
            context={"invoice": invoice, "billing_url": _billing_url(), "suspend_on": invoice.due_at + grace},
        )
    return sent


def send_suspensions(*, since: datetime) -> int:
    sent = 0
    events = AuditEvent.objects.filter(action="tenant.suspend", created_at__gte=since, tenant__isnull=False)
    for event in events.select_related("tenant"):
        sent += notices.send_once(
            tenant=event.tenant,
            kind=Notice.Kind.SUSPENDED,
            key=str(event.pk),
            topic=notices.BILLING,
            template="suspended",
            context={"reason": event.detail.get("reason", ""), "at": event.created_at, "billing_url": _billing_url()},
        )
    return sent


def send_pending(*, now: datetime | None = None) -> int:
    now = now or timezone.now()
    since = now - timedelta(hours=settings.NOTICE_LOOKBACK_HOURS)
    sent = send_invoices_issued(since=since) + send_invoices_overdue(now=now, since=since)
    return sent + send_suspensions(since=since)
