from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from rest_framework.exceptions import PermissionDenied

from compute import console
from compute.models import Flavor, Instance
from portal.api import ConflictError
from tenants import services as tenant_services
from tenants.access import actor_for_request, get_scoped, switch_tenant


def home(request):
    actor = actor_for_request(request)
    flavors = Flavor.objects.filter(active=True)
    return render(request, "portal/home.html", {"actor": actor, "flavors": flavors})


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@login_required
def instance_console(request, pk):
    actor = actor_for_request(request)
    if actor is None:
        raise Http404("No such instance.")
    instance = get_scoped(actor, Instance.objects.select_related("host"), pk)
    try:
        token = console.mint_token(actor=actor, instance=instance)
    except (ConflictError, PermissionDenied) as exc:
        return render(
            request, "portal/console_unavailable.html", {"instance": instance, "reason": exc.detail}, status=409
        )
    return render(request, "portal/console.html", {"instance": instance, "websocket_url": console.websocket_url(token)})


@login_required
def invitation_accept(request, token: str):
    """GET shows what the invitation is for; only the POST accepts it (link scanners GET)."""
    if request.method == "POST":
        try:
            membership = tenant_services.invitation_accept(user=request.user, token=token)
        except tenant_services.InvitationInvalid as exc:
            return render(request, "portal/invitation.html", {"error": str(exc)}, status=400)
        switch_tenant(request, membership.tenant_id)
        messages.success(request, f"You joined {membership.tenant.name} as {membership.role}.")
        return redirect("home")
    return render(request, "portal/invitation.html", {"token": token})


@login_required
@require_POST
def tenant_switch(request):
    tenant_id = request.POST.get("tenant", "")
    try:
        switch_tenant(request, tenant_id)
    except (Http404, ValueError, ValidationError):
        messages.error(request, "You are not a member of that tenant.")
    return redirect(
        request.POST.get("next")
        if url_has_allowed_host_and_scheme(request.POST.get("next"), allowed_hosts={request.get_host()})
        else "home"
    )
