"""The operator dashboard (staff only): hosts and their capacity, instances, failures, tenants."""

from __future__ import annotations

from django.db.models import Count, Q
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from compute.models import Host, Image, Instance, InstanceAction, InstanceState
from portal import billing_figures
from portal.views.guards import minute, staff_page, unchanged, version_of, versioned
from tenants.models import Tenant

RECENT = 20
LIVE = ~Q(instances__state=InstanceState.DELETED)


def _host_rows() -> list[dict]:
    hosts = Host.objects.annotate(live=Count("instances", filter=LIVE))
    rows = []
    for host in hosts:
        capacity = host.capacity()
        rows.append(
            {
                "host": host,
                "bars": [
                    ("vCPU", host.vcpus_used, capacity["vcpus"], ""),
                    (_("Memory"), host.memory_mb_used, capacity["memory_mb"], "MiB"),
                    (_("Disk"), host.disk_gb_used, capacity["disk_gb"], "GiB"),
                ],
            }
        )
    return rows


@require_GET
@staff_page
def dashboard(request):
    if request.GET.get("panel") == "images":  # htmx: the images panel, polled
        return render(request, "portal/ops/_images.html", _image_rows())
    by_state = dict(
        Instance.objects.exclude(state=InstanceState.DELETED)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    tenants = Tenant.objects.annotate(
        members=Count("memberships", distinct=True), live=Count("instances", filter=LIVE, distinct=True)
    ).order_by("-created_at")
    context = {
        "hosts": _host_rows(),
        "by_state": [
            (state, label, by_state.get(state, 0)) for state, label in InstanceState.choices if state in by_state
        ],
        "live_total": sum(by_state.values()),
        "failed_instances": Instance.objects.filter(state=InstanceState.ERROR)
        .select_related("tenant", "host")
        .order_by("-created_at")[:RECENT],
        "failed_actions": InstanceAction.objects.filter(status=InstanceAction.Status.FAILED)
        .select_related("instance__tenant")
        .order_by("-started_at")[:RECENT],
        "tenants": tenants[:RECENT],
        "tenant_count": Tenant.objects.count(),
        "suspended_count": Tenant.objects.filter(status=Tenant.Status.SUSPENDED).count(),
        "revenue": billing_figures.revenue_last_month(),
        **_image_rows(),
    }
    context["version"] = _hosts_version(context["hosts"])
    return render(request, "portal/ops/dashboard.html", context)


def _hosts_version(rows: list[dict]) -> str:
    # The heartbeat is shown as "n minutes ago": its minute is enough.
    return version_of(
        [(h.pk, h.status, h.status_detail, h.live, r["bars"], h.last_heartbeat) for r in rows for h in [r["host"]]]
        + [minute()]
    )


def _image_rows() -> dict:
    """The operator images with their import's progress or refusal; polled faster while one
    is being imported."""
    rows = list(Image.objects.filter(visibility=Image.Visibility.PUBLIC).exclude(state=Image.State.DELETED))
    for image in rows:
        image.percent = min(100, image.progress_bytes * 100 // image.expected_bytes) if image.expected_bytes else None
    return {"images": rows, "importing": any(i.state == Image.State.PENDING for i in rows)}


@require_GET
@staff_page
def hosts(request):
    """htmx: the hosts panel, polled so capacity moves as instances come and go (an unchanged
    panel is a 304)."""
    rows = _host_rows()
    version = _hosts_version(rows)
    if not_modified := unchanged(request, version):
        return not_modified
    return versioned(render(request, "portal/ops/_hosts.html", {"hosts": rows, "version": version}), version)
