"""Compute's e-mail notices: an instance gone into error, a host outage affecting a tenant.

Beat runs `send_pending` (billing.tasks.send_notices). It reads InstanceStateLog and
HostStatusLog rows of the last NOTICE_LOOKBACK_HOURS: they are written with the change they
record, so a row seen here is committed; tenants.notices.send_once sends each notice once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from compute.models import Host, HostStatusLog, Instance, InstanceState, InstanceStateLog
from tenants import notices
from tenants.models import Notice


def _instance_url(instance_id) -> str:
    return f"{settings.PORTAL_BASE_URL}{reverse('instance', args=[instance_id])}"


def send_instance_errors(*, since: datetime) -> int:
    sent = 0
    rows = InstanceStateLog.objects.filter(state=InstanceState.ERROR, at__gte=since).select_related("instance__tenant")
    for row in rows:
        instance = row.instance
        if instance.state == InstanceState.DELETED:
            continue  # deleted since: nothing left to tell about
        sent += notices.send_once(
            tenant=instance.tenant,
            kind=Notice.Kind.INSTANCE_ERROR,
            key=str(row.pk),
            topic=notices.INCIDENTS,
            template="instance_error",
            context={"instance": instance, "at": row.at, "instance_url": _instance_url(instance.pk)},
        )
    return sent


def send_host_outages(*, since: datetime) -> int:
    """One notice per outage (a host going down) and tenant with live instances there."""
    sent = 0
    for row in HostStatusLog.objects.filter(status=Host.Status.DOWN, at__gte=since).select_related("host"):
        affected = defaultdict(list)
        live = Instance.objects.filter(host=row.host, created_at__lte=row.at).exclude(state=InstanceState.DELETED)
        for instance in live.select_related("tenant").order_by("name"):
            affected[instance.tenant].append(
                {"name": instance.name, "ip_address": instance.ip_address, "url": _instance_url(instance.pk)}
            )
        for tenant, instances in affected.items():
            sent += notices.send_once(
                tenant=tenant,
                kind=Notice.Kind.HOST_OUTAGE,
                key=str(row.pk),
                topic=notices.INCIDENTS,
                template="host_outage",
                context={"instances": instances, "at": row.at},
            )
    return sent


def send_pending(*, now: datetime | None = None) -> int:
    since = (now or timezone.now()) - timedelta(hours=settings.NOTICE_LOOKBACK_HOURS)
    return send_instance_errors(since=since) + send_host_outages(since=since)
