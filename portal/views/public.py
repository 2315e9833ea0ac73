"""Pages anyone may see: the landing page with the flavor catalogue, and the health check."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render

from compute.models import Flavor
from compute.sizing import Size
from portal import billing_figures
from tenants.access import actor_for_request


def catalogue_context() -> dict:
    rows = [
        {
            "flavor": flavor,
            "price": billing_figures.monthly_estimate(Size.of_flavor(flavor), flavor.pk),
            "hourly": billing_figures.hourly_estimate(Size.of_flavor(flavor), flavor.pk),
        }
        for flavor in Flavor.objects.filter(active=True)
    ]
    return {"rows": rows, "custom_sla": settings.CUSTOM_SIZE_SLA_PERCENT}


def home(request):
    """The dashboard for members of a tenant, the operator dashboard for staff, else the catalogue."""
    actor = actor_for_request(request)
    if actor is not None:
        return redirect("dashboard")
    if request.user.is_authenticated and request.user.is_staff:
        return redirect("ops")
    return render(request, "portal/home.html", catalogue_context())


def catalogue(request):
    return render(request, "portal/catalogue.html", catalogue_context())


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
