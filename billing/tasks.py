"""Celery tasks of billing: thin, idempotent, ids in."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from billing import invoicing, metering, periods, suspension, usage
from billing import notices as billing_notices
from billing import prices as price_lookup
from compute import notices as compute_notices
from compute.models import Host


@shared_task
def meter_host(host_id: str) -> dict:
    """On the host's queue: collect counters, store samples, enforce traffic allowances."""
    return {k: v if isinstance(v, int) else len(v) for k, v in metering.meter(Host.objects.get(pk=host_id)).items()}


@shared_task
def meter_all_hosts() -> int:
    # Disabled (draining) hosts still run guests, and their traffic is still billed.
    hosts = Host.objects.filter(status__in=[Host.Status.UP, Host.Status.DISABLED]).values_list("id", "queue")
    for host_id, queue in hosts:
        meter_host.apply_async(args=[str(host_id)], queue=queue, expires=settings.METERING_SECONDS)
    return len(hosts)


@shared_task
def aggregate_recent_hours() -> int:
    """The current and the previous hour (a rerun of an hour replaces it with the same)."""
    now = timezone.now()
    start = usage.floor_hour(now) - timedelta(hours=1)
    return usage.aggregate(start=start, end=now, minimum_seconds=price_lookup.price_list().minimum_seconds)


@shared_task
def invoice_last_month() -> dict:
    today = timezone.now().date()
    report = invoicing.run_month(period=periods.previous_month(today))
    return {"invoices": report["invoices"], "total": str(report["total"])}


@shared_task
def stop_suspended_instances() -> list[str]:
    return suspension.stop_running_of_suspended()


@shared_task
def suspend_overdue_tenants() -> list[str]:
    return suspension.suspend_overdue()


@shared_task
def send_notices() -> int:
    """E-mail what happened since the last run: invoices issued or overdue, suspensions,
    instances in error, host outages; each notice once."""
    return billing_notices.send_pending() + compute_notices.send_pending()
