"""The tenant's images: its snapshots (renamed, deleted here) and the public images it may use."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from compute import hosts, services
from compute.models import Image
from compute.selectors import images_visible_filter
from portal.forms import ImageRenameForm
from portal.views.guards import REFUSALS, refuse_on_form, require_role, tenant_page, why
from tenants.access import Actor, get_scoped, scoped
from tenants.models import Role


def _snapshots(actor: Actor):
    return scoped(actor, Image.objects.exclude(state=Image.State.DELETED).select_related("source_instance"))


@tenant_page
def images(request, actor: Actor):
    public = (
        Image.objects.filter(images_visible_filter(actor.tenant), tenant__isnull=True, state=Image.State.ACTIVE)
        .exclude(rescue=True)
        .order_by("os_family", "os_version", "name")
    )
    context = {
        "actor": actor,
        "snapshots": _snapshots(actor).order_by("-created_at"),
        "public": public,
        "can_manage": actor.may_write(Role.MEMBER),
    }
    return render(request, "portal/images/list.html", context)


@tenant_page
def image_rename(request, actor: Actor, pk):
    """GET shows the form; POST renames, or shows why not next to the name."""
    image = get_scoped(actor, _snapshots(actor), pk)
    form = ImageRenameForm(initial={"name": image.name})
    status = 200
    if request.method == "POST":
        require_role(actor, Role.MEMBER)
        form = ImageRenameForm(request.POST)
        if form.is_valid():
            try:
                renamed = services.image_rename(actor=actor, image=image, name=form.cleaned_data["name"])
            except REFUSALS as exc:
                refuse_on_form(form, exc)
            else:
                messages.success(request, _("Renamed to %(name)s.") % {"name": renamed.name})
                return redirect("images")
        status = 400
    return render(request, "portal/images/rename.html", {"actor": actor, "image": image, "form": form}, status=status)


@tenant_page
def image_delete(request, actor: Actor, pk):
    """GET asks first; POST deletes."""
    image = get_scoped(actor, _snapshots(actor), pk)
    if request.method != "POST":
        return render(request, "portal/images/delete.html", {"actor": actor, "image": image})
    require_role(actor, Role.MEMBER)
    try:
        hosts.image_delete(actor=actor, image=image)
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(request, _("%(name)s deleted.") % {"name": image.name})
    return redirect("images")
