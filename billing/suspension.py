"""Suspending a tenant (unpaid past the grace period, or by an operator) and reactivating it.

A suspended tenant cannot create or start instances; its running instances are stopped, not
deleted, and remembered, so reactivation starts exactly those again.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from base.errors import Conflict
from billing import prices
from billing.models import Invoice
from compute import services as compute_services
from compute.models import Instance, InstanceState
from tenants import services as tenant_services
from tenants.access import Actor
from tenants.models import Tenant, User


def tenant_suspend(*, actor: Actor | User | None, tenant: Tenant, reason: str) -> list[str]:
    """Suspend the tenant and stop its running instances; returns the ids stopped.

    `actor`: an Actor, a staff User (the admin), or None for the system."""
    tenant_services.tenant_set_suspended(actor=actor, tenant=tenant, reason=reason)
    stopped = []
    for instance in Instance.objects.filter(tenant=tenant, state=InstanceState.RUNNING):
        try:
            compute_services.instance_stop(actor=None, instance=instance)
        except Conflict:
            continue  # it changed state meanwhile; the next pass of the caller may retry
        Instance.objects.filter(pk=instance.pk).update(stopped_by_suspension=True)
        stopped.append(str(instance.pk))
    tenant.refresh_from_db()
    return stopped


def tenant_reactivate(*, actor: Actor | User | None, tenant: Tenant) -> list[str]:
    """Reactivate the tenant and start the instances its suspension stopped."""
    tenant_services.tenant_set_active(actor=actor, tenant=tenant)
    tenant.refresh_from_db()
    started = []
    for instance in Instance.objects.filter(tenant=tenant, stopped_by_suspension=True):
        Instance.objects.filter(pk=instance.pk).update(stopped_by_suspension=False)
        if instance.state == InstanceState.STOPPED:
            compute_services.instance_start(actor=None, instance=instance)
            started.append(str(instance.pk))
    return started


def stop_running_of_suspended() -> list[str]:
    """Stop what settled into running after its tenant was suspended (a build or start that
    was already under way); runs on a beat."""
    stopped = []
    for instance in Instance.objects.filter(state=InstanceState.RUNNING, tenant__status=Tenant.Status.SUSPENDED):
        try:
            compute_services.instance_stop(actor=None, instance=instance)
        except Conflict:
            continue
        Instance.objects.filter(pk=instance.pk).update(stopped_by_suspension=True)
        stopped.append(str(instance.pk))
    return stopped


def suspend_overdue(*, now=None) -> list[str]:
    """Suspend active tenants with an invoice unpaid past its due date plus the grace period.

    An invoice whose SLA credit outweighs its charges (total zero or less) asks for nothing.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=prices.price_list().grace_days)
    overdue = Invoice.objects.filter(
        state=Invoice.State.ISSUED, due_at__lt=cutoff, total__gt=0, tenant__status=Tenant.Status.ACTIVE
    ).order_by("due_at")
    oldest = {}  # tenant -> its oldest overdue invoice: the one the reason names
    for invoice in overdue.only("tenant_id", "number", "due_at", "total", "currency"):
        oldest.setdefault(invoice.tenant_id, invoice)
    suspended = []
    for tenant in Tenant.objects.filter(pk__in=list(oldest)):
        invoice = oldest[tenant.pk]
        reason = (
            f"Invoice {invoice.number} ({invoice.total} {invoice.currency}) was due on {invoice.due_at:%Y-%m-%d} "
            "and is still unpaid after the grace period."
        )
        tenant_suspend(actor=None, tenant=tenant, reason=reason)
        suspended.append(str(tenant.pk))
    return suspended
