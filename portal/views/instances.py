"""Instance pages: the dashboard, create, one instance with its actions, charts and log, its console."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Max, Q
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from base.errors import Invalid, QuotaExceeded
from base.units import mib
from billing import selectors as billing_selectors
from compute import console, dns, progress, security_groups, services
from compute.models import Host, Instance, InstanceAction, InstanceState, InstanceTag, SecurityGroup
from compute.selectors import tenant_resource_usage
from compute.sizing import Size
from compute.transitions import SETTLED_STATES, STABLE_STATES, allowed_actions
from portal import billing_figures
from portal.forms import InstanceCreateForm, InstanceEditForm, RebuildForm, ResizeForm, SizeForm, SnapshotForm
from portal.views.guards import (
    REFUSALS,
    minute,
    refuse_on_form,
    require_role,
    tenant_page,
    unchanged,
    version_of,
    versioned,
    why,
)
from tenants.access import Actor, get_scoped, scoped
from tenants.models import Quota, Role

# Actions that are one click (a POST form on the instance page); the others have a page of their own.
POWER_ACTIONS = {"start": services.instance_start, "stop": services.instance_stop, "reboot": services.instance_reboot}
REQUESTED = {
    "start": gettext_lazy("Start of %(name)s requested."),
    "stop": gettext_lazy("Stop of %(name)s requested."),
    "reboot": gettext_lazy("Reboot of %(name)s requested."),
}
LOG_LENGTH = 50
# Form fields the services name in base.errors.Invalid, by their name in the create form.
SERVICE_FIELDS = {"ssh_key_ids": "ssh_keys", "security_group_ids": "security_groups", "size": None}


def _instances(actor: Actor):
    return scoped(actor, Instance.objects.select_related("image", "flavor", "host"))


def _in_flight(instances) -> bool:
    return any(i.state not in SETTLED_STATES for i in instances)


# -- the dashboard ---------------------------------------------------------------------------------


# Instances per dashboard page: each row's cost is computed live, and the rows are polled.
DASHBOARD_PAGE = 50
# The list's orders, by the name in ?sort=; the id makes each total, for stable pages.
SORTS = {
    "newest": ("-created_at", "-id"),
    "oldest": ("created_at", "id"),
    "name": ("name", "id"),
    "-name": ("-name", "-id"),
    "state": ("state", "name", "id"),
}
# What a polled row shows, as its version: a change of any of these is a change of the page.
ROW_FIELDS = (
    "id",
    "name",
    "state",
    "power_state",
    "ip_address",
    "dns_label",
    "flavor_id",
    "vcpus",
    "memory_mb",
    "disk_gb",
    "error_step",
    "throttled",
    "host__status",
)


def _list_filters(request) -> dict:
    """Search, tag and order of the instance list, from the query string (bad ones ignored)."""
    query = request.GET.get("q", "").replace("\x00", "").strip()[:100]
    tag = request.GET.get("tag", "").replace("\x00", "").strip()[:32]
    sort = request.GET.get("sort", "newest")
    return {"q": query, "tag": tag, "sort": sort if sort in SORTS else "newest"}


def _quota_cards(actor: Actor) -> list[dict]:
    quota = Quota.objects.filter(tenant=actor.tenant).first()
    usage = tenant_resource_usage(actor.tenant)
    return [
        {"name": name, "label": label, "used": usage[name], "limit": getattr(quota, name, 0)}
        for name, label in [("instances", _("Instances")), ("vcpus", _("vCPUs")), ("memory_mb", _("Memory"))]
    ]


@require_GET
@tenant_page
def dashboard(request, actor: Actor):
    filters = _list_filters(request)
    live = _instances(actor).exclude(state=InstanceState.DELETED)
    if filters["q"]:
        live = live.filter(Q(name__icontains=filters["q"]) | Q(ip_address__startswith=filters["q"]))
    if filters["tag"]:
        live = live.filter(tags__name=filters["tag"])
    # get_page turns a page number that is not one into the first or last page.
    page = Paginator(live.order_by(*SORTS[filters["sort"]]).values_list(*ROW_FIELDS), DASHBOARD_PAGE).get_page(
        request.GET.get("page")
    )
    shown = list(page.object_list)
    ids = [row[0] for row in shown]
    tags = list(InstanceTag.objects.filter(instance_id__in=ids).values_list("instance_id", "name"))
    quota = _quota_cards(actor)
    version = version_of(
        actor.tenant.pk, actor.role, filters, page.number, page.paginator.count, shown, tags, quota, minute()
    )
    if request.htmx and (not_modified := unchanged(request, version)):
        return not_modified
    by_id = _instances(actor).prefetch_related("tags").in_bulk(ids)
    instances = [by_id[pk] for pk in ids if pk in by_id]
    costs = billing_figures.costs_so_far(actor.tenant, instances)
    context = {
        "actor": actor,
        "rows": [{"instance": i, "cost": costs[i.pk], "dns_name": _dns_name(actor, i)} for i in instances],
        "polling": _in_flight(instances),
        "page": page,
        "filters": filters,
        "query": request.GET.urlencode(),
        "quota": quota,
        "version": version,
    }
    if request.htmx:
        return versioned(render(request, "portal/instances/_rows.html", {**context, "oob_quota": True}), version)
    context["can_write"] = actor.may_write(Role.MEMBER)
    context["sorts"] = [
        ("newest", _("Newest first")),
        ("oldest", _("Oldest first")),
        ("name", _("Name A–Z")),
        ("-name", _("Name Z–A")),
        ("state", _("State")),
    ]
    context["tenant_tags"] = (
        InstanceTag.objects.filter(instance__in=scoped(actor, Instance.objects).exclude(state=InstanceState.DELETED))
        .values_list("name", flat=True)
        .distinct()
        .order_by("name")
    )
    return versioned(render(request, "portal/instances/dashboard.html", context), version)


# -- create ----------------------------------------------------------------------------------------


def _dns_name(actor: Actor, instance: Instance) -> str:
    return dns.fqdn(label=instance.dns_label, tenant_slug=actor.tenant.slug)


@tenant_page
def create(request, actor: Actor):
    if request.method != "POST":
        default_group = security_groups.default_group(actor.tenant)  # made on first need, pre-ticked
        return _create_page(request, actor, InstanceCreateForm(actor=actor, default_group=default_group))
    require_role(actor, Role.MEMBER)
    form = InstanceCreateForm(request.POST, actor=actor)
    if not form.is_valid():
        return _create_page(request, actor, form, status=400)
    data = form.cleaned_data
    create_request = services.CreateRequest(
        name=data["name"],
        image_id=str(data["image"].pk),
        size=form.size(),
        flavor_id=form.flavor_id(),
        ssh_key_ids=tuple(str(key.pk) for key in data["ssh_keys"]),
        user_data=data["user_data"],
        security_group_ids=form.security_group_ids(),
    )
    try:
        made = services.instances_create(actor=actor, request=create_request, count=data["count"])
    except QuotaExceeded as exc:
        _quota_error(form, exc)
        return _create_page(request, actor, form, status=409)
    except Invalid as exc:
        refuse_on_form(form, exc, fields=SERVICE_FIELDS)
        return _create_page(request, actor, form, status=400)
    except REFUSALS as exc:
        refuse_on_form(form, exc)
        return _create_page(request, actor, form, status=409)
    if len(made) > 1:
        messages.success(
            request,
            _("%(count)s instances are being built: %(names)s.")
            % {"count": len(made), "names": ", ".join(instance.name for instance in made)},
        )
        return redirect("dashboard")
    instance = made[0]
    messages.success(
        request,
        _("%(name)s is being built. Its address is %(address)s.")
        % {"name": instance.name, "address": instance.ip_address},
    )
    return redirect("instance", pk=instance.pk)


def quota_sentence(exc: QuotaExceeded) -> str:
    """The sentence a customer reads about the limit a request would pass."""
    amount, left, limit, used = exc.requested, exc.left, exc.limit, exc.in_use
    if exc.resource == "instances" and exc.requested > 1:
        text = _("This makes %(amount)s instances; your tenant has %(left)s left of %(limit)s.")
    elif exc.resource == "instances":
        text = _("Your tenant already has %(used)s of its %(limit)s instances; delete one, or ask for more.")
    elif exc.resource == "vcpus":
        text = _("This needs %(amount)s vCPUs; your tenant has %(left)s left of %(limit)s.")
    elif exc.resource == "memory_mb":
        text = _("This needs %(amount)s of memory; your tenant has %(left)s left of %(limit)s.")
        amount, left, limit = mib(amount), mib(left), mib(limit)
    else:
        text = _("This needs %(amount)s GiB of disk; your tenant has %(left)s GiB left of %(limit)s GiB.")
    return text % {"amount": amount, "left": left, "limit": limit, "used": used}


def _quota_error(form: SizeForm, exc: QuotaExceeded) -> None:
    """Show a quota refusal as a sentence next to the size field it is about."""
    if exc.resource == "instances":
        form.add_error("count" if exc.requested > 1 else None, quota_sentence(exc))
    elif form.mode() == "flavor":
        form.add_error("flavor", quota_sentence(exc))
    else:
        form.add_error(exc.resource, quota_sentence(exc))


def _create_page(request, actor: Actor, form: InstanceCreateForm, status: int = 200):
    context = {
        "actor": actor,
        "form": form,
        "image_groups": image_groups([{"widget": w, "image": w.data["value"].instance} for w in form["image"]]),
        "can_write": actor.may_write(Role.MEMBER),
        # What each image needs, so the page greys out the flavors too small for it.
        "image_needs": {
            str(card["image"].pk): {"disk_gb": card["image"].min_disk_gb, "memory_mb": card["image"].min_memory_mb}
            for card in [{"image": w.data["value"].instance} for w in form["image"]]
        },
    }
    return render(request, "portal/instances/create.html", {**context, **_size_context(form)}, status=status)


# How OS families are spelled on the create page; others are shown as given, capitalised.
OS_FAMILY_NAMES = {
    "almalinux": "AlmaLinux",
    "alpine": "Alpine Linux",
    "centos": "CentOS",
    "debian": "Debian",
    "fedora": "Fedora",
    "freebsd": "FreeBSD",
    "opensuse": "openSUSE",
    "rocky": "Rocky Linux",
    "ubuntu": "Ubuntu",
}


def _version_key(version: str) -> tuple:
    """Newest first: 24.04 before 22.04 before 9, numbers compared as numbers."""
    return tuple((0, -int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.\s_-]+", version))


def image_groups(cards: list[dict]) -> list[dict]:
    """The image choices grouped by OS family (A to Z), then version (newest first); the
    tenant's snapshots come last, as a group of their own."""
    families: dict[str, dict[str, list[dict]]] = {}
    snapshots = []
    for card in cards:
        image = card["image"]
        if image.visibility == image.Visibility.PRIVATE:
            snapshots.append(card)
            continue
        families.setdefault(image.os_family, {}).setdefault(image.os_version, []).append(card)
    groups = []
    for family in sorted(families, key=lambda f: OS_FAMILY_NAMES.get(f, f).lower()):
        label = OS_FAMILY_NAMES.get(family, family.capitalize())
        versions = sorted(families[family].items(), key=lambda item: _version_key(item[0]))
        groups.append(
            {
                "family": family,
                "label": label,
                "versions": [
                    {"version": v, "label": f"{label} {v}".strip(), "cards": sorted(c, key=lambda c: c["image"].name)}
                    for v, c in versions
                ],
            }
        )
    if snapshots:
        groups.append(
            {
                "family": "snapshot",
                "label": _("Your snapshots"),
                "versions": [{"version": "", "label": _("Snapshots"), "cards": snapshots}],
            }
        )
    return groups


def _size_context(form: SizeForm) -> dict:
    """What the size part of a form shows: the flavor cards with their prices, and the current size."""
    cards = []
    for widget in form["flavor"]:
        flavor = widget.data["value"].instance
        cards.append(
            {
                "widget": widget,
                "flavor": flavor,
                "price": billing_figures.monthly_estimate(Size.of_flavor(flavor), flavor.pk),
            }
        )
    return {"flavor_cards": cards, "price": _price(form)}


def _price(form: SizeForm) -> dict:
    """The size a (possibly half-filled) size form describes, and its monthly price."""
    if form.is_bound:
        data = form.data
    else:
        data = {name: field.initial for name, field in form.fields.items() if field.initial is not None}
        data.update(form.initial)
    probe = SizeForm(data)
    if not probe.is_valid():
        return {"size": None, "price": billing_figures.NOT_YET}
    size = probe.size()
    # A standard flavor has its own price; only a custom size is priced by its parts.
    return {"size": size, "price": billing_figures.monthly_estimate(size, probe.flavor_id())}


@require_GET
@tenant_page
def create_price(request, actor: Actor):
    """htmx: the summary and monthly price of the size the create (or resize) form shows now."""
    form = SizeForm(request.GET)
    return render(request, "portal/instances/_price.html", {"price": _price(form)})


# -- one instance ----------------------------------------------------------------------------------


def _live_version(actor: Actor, instance: Instance) -> str:
    """What the live part shows, cheaply: the row, its host's status, its tags, and its log's
    shape (a step that changes status changes a count); plus the minute, for the cost."""
    row = (
        scoped(actor, Instance.objects)
        .filter(pk=instance.pk)
        .values_list(
            *ROW_FIELDS, "bandwidth_mbit", "traffic_gb", "sla_percent", "error_message", "vnc_port", "image_id"
        )
    )
    log = instance.actions.aggregate(
        n=Count("id"),
        last=Max("id"),
        done=Count("id", filter=Q(status=InstanceAction.Status.DONE)),
        failed=Count("id", filter=Q(status=InstanceAction.Status.FAILED)),
        running=Count("id", filter=Q(status=InstanceAction.Status.RUNNING)),
    )
    tags = list(instance.tags.values_list("name", flat=True))
    return version_of(actor.role, list(row), sorted(log.items()), tags, minute())


def _live_context(actor: Actor, instance: Instance) -> dict:
    actions = list(instance.actions.select_related("user").order_by("id"))
    allowed = (
        allowed_actions(instance.state, has_iso=instance.iso_id is not None) if actor.may_write(Role.MEMBER) else []
    )
    steps = progress.action_steps(actions)
    show_steps = steps is not None and (
        instance.state not in STABLE_STATES
        or (instance.state == InstanceState.ERROR and steps["done"] < steps["total"])
    )
    return {
        "actor": actor,
        "instance": instance,
        "allowed": allowed,
        "power_actions": [a for a in ("start", "stop", "reboot") if a in allowed],
        "progress": steps if show_steps else None,
        "log": list(reversed(actions))[:LOG_LENGTH],
        "in_flight": instance.state not in SETTLED_STATES,
        "host_down": instance.host.status == Host.Status.DOWN,
        "console_ready": instance.state in console.CONSOLE_STATES and actor.may_write(Role.MEMBER),
        "cost": billing_figures.cost_so_far(instance),
        "tags": list(instance.tags.all()),
        "throttle_reason": billing_selectors.throttle_reason(instance),
        "dns_name": _dns_name(actor, instance),
    }


def _firewall_context(actor: Actor, instance: Instance) -> dict:
    """The instance page's Firewall card: its groups, and the tenant's others it may join."""
    groups = list(scoped(actor, SecurityGroup.objects))
    member_of = set(instance.security_groups.values_list("pk", flat=True))
    return {
        "member_groups": [g for g in groups if g.pk in member_of],
        "other_groups": [g for g in groups if g.pk not in member_of],
        "firewall_editable": actor.may_write(Role.MEMBER)
        and instance.state not in (InstanceState.DELETING, InstanceState.DELETED),
    }


@require_GET
@tenant_page
def detail(request, actor: Actor, pk):
    instance = get_scoped(actor, _instances(actor), pk)
    version = _live_version(actor, instance)
    context = {**_live_context(actor, instance), **_firewall_context(actor, instance), "version": version}
    return versioned(render(request, "portal/instances/detail.html", context), version)


@require_GET
@tenant_page
def live(request, actor: Actor, pk):
    """htmx: the parts of the instance page that change (state, progress, actions, details,
    log), polled always: a guest can power itself off, and a host can go down, at any time."""
    instance = get_scoped(actor, _instances(actor), pk)
    version = _live_version(actor, instance)
    if not_modified := unchanged(request, version):
        return not_modified
    context = {**_live_context(actor, instance), "version": version}
    return versioned(render(request, "portal/instances/_live.html", context), version)


@require_GET
@tenant_page
def usage(request, actor: Actor, pk):
    """Chart data of the instance page: 5-minute points of CPU, traffic and disk."""
    instance = get_scoped(actor, _instances(actor), pk)
    return JsonResponse(billing_figures.usage_series(instance))


@tenant_page
def edit(request, actor: Actor, pk):
    """Rename an instance and set its tags."""
    instance = get_scoped(actor, _instances(actor), pk)
    tags = ", ".join(instance.tags.values_list("name", flat=True))
    if request.method != "POST":
        form = InstanceEditForm(initial={"name": instance.name, "tags": tags})
        return render(request, "portal/instances/edit.html", {"actor": actor, "instance": instance, "form": form})
    require_role(actor, Role.MEMBER)
    form = InstanceEditForm(request.POST)
    if form.is_valid():
        try:
            services.instance_rename(actor=actor, instance=instance, name=form.cleaned_data["name"])
            services.instance_set_tags(actor=actor, instance=instance, tags=form.cleaned_data["tags"])
        except REFUSALS as exc:
            refuse_on_form(form, exc)
        else:
            messages.success(request, _("Saved the name and tags of %(name)s.") % {"name": form.cleaned_data["name"]})
            return redirect("instance", pk=instance.pk)
    return render(
        request, "portal/instances/edit.html", {"actor": actor, "instance": instance, "form": form}, status=400
    )


# Power actions that ask first (GET shows the question, POST does it).
CONFIRMED = {"stop"}


@tenant_page
def power(request, actor: Actor, pk, action: str):
    if action not in POWER_ACTIONS or request.method not in ("GET", "POST"):
        raise Http404(_("No such action."))
    if request.method == "GET" and action not in CONFIRMED:
        raise Http404(_("No such page."))
    instance = get_scoped(actor, _instances(actor), pk)
    if request.method == "GET":
        return render(request, f"portal/instances/{action}.html", {"actor": actor, "instance": instance})
    require_role(actor, Role.MEMBER)
    try:
        POWER_ACTIONS[action](actor=actor, instance=instance)
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(request, REQUESTED[action] % {"name": instance.name})
    return redirect("instance", pk=instance.pk)


@tenant_page
def delete(request, actor: Actor, pk):
    instance = get_scoped(actor, _instances(actor), pk)
    if request.method == "POST":
        require_role(actor, Role.MEMBER)
        try:
            services.instance_delete(actor=actor, instance=instance)
        except REFUSALS as exc:
            messages.error(request, why(exc))
            return redirect("instance", pk=instance.pk)
        messages.success(
            request, _("%(name)s is being deleted; its disk and address are released.") % {"name": instance.name}
        )
        return redirect("dashboard")
    return render(request, "portal/instances/delete.html", {"actor": actor, "instance": instance})


def _action_page(request, actor: Actor, instance: Instance, action: str, form, status: int = 200):
    return render(
        request,
        f"portal/instances/{action}.html",
        {
            "actor": actor,
            "instance": instance,
            "form": form,
            "allowed": action in allowed_actions(instance.state, has_iso=instance.iso_id is not None),
            **(_size_context(form) if isinstance(form, SizeForm) else {}),
        },
        status=status,
    )


@tenant_page
def resize(request, actor: Actor, pk):
    instance = get_scoped(actor, _instances(actor), pk)
    if request.method != "POST":
        initial = {"size_mode": "custom", **Size.of_instance(instance).as_fields()}
        if instance.flavor_id:
            initial.update(size_mode="flavor", flavor=instance.flavor_id)
        return _action_page(request, actor, instance, "resize", ResizeForm(initial=initial))
    require_role(actor, Role.MEMBER)
    form = ResizeForm(request.POST)
    return _submit(
        request,
        actor,
        instance,
        "resize",
        form,
        lambda: services.instance_resize(actor=actor, instance=instance, size=form.size(), flavor_id=form.flavor_id()),
        lambda _result: _("Resize of %(name)s requested.") % {"name": instance.name},
    )


@tenant_page
def rebuild(request, actor: Actor, pk):
    instance = get_scoped(actor, _instances(actor), pk)
    if request.method != "POST":
        form = RebuildForm(actor=actor, initial={"image": instance.image_id})
        return _action_page(request, actor, instance, "rebuild", form)
    require_role(actor, Role.MEMBER)
    form = RebuildForm(request.POST, actor=actor)
    return _submit(
        request,
        actor,
        instance,
        "rebuild",
        form,
        lambda: services.instance_rebuild(actor=actor, instance=instance, image_id=form.cleaned_data["image"].pk),
        lambda _result: _("Rebuild of %(name)s requested: its disk starts afresh.") % {"name": instance.name},
    )


@tenant_page
def snapshot(request, actor: Actor, pk):
    instance = get_scoped(actor, _instances(actor), pk)
    if request.method != "POST":
        return _action_page(
            request, actor, instance, "snapshot", SnapshotForm(initial={"name": f"{instance.name}-snap"})
        )
    require_role(actor, Role.MEMBER)
    form = SnapshotForm(request.POST)
    return _submit(
        request,
        actor,
        instance,
        "snapshot",
        form,
        lambda: services.instance_snapshot(actor=actor, instance=instance, name=form.cleaned_data["name"])[1],
        lambda image: _("Snapshot %(name)s is being taken; it becomes an image of this tenant.") % {"name": image.name},
    )


def _submit(request, actor: Actor, instance, action: str, form, call, done):
    """The POST of an action page: validate, call the service, and show a refusal next to the
    field it names (or above the form); on success, back to the instance with `done(result)`."""
    if form.is_valid():
        try:
            result = call()
        except QuotaExceeded as exc:
            if isinstance(form, SizeForm):
                _quota_error(form, exc)
            else:
                refuse_on_form(form, exc)
        except REFUSALS as exc:
            refuse_on_form(form, exc)
        else:
            messages.success(request, done(result))
            return redirect("instance", pk=instance.pk)
    return _action_page(request, actor, instance, action, form, status=400)


@tenant_page
def instance_console(request, actor: Actor, pk):
    instance = get_scoped(actor, Instance.objects.select_related("host"), pk)
    try:
        token = console.mint_token(actor=actor, instance=instance)
    except REFUSALS as exc:
        reason = why(exc)
        if instance.state == InstanceState.RUNNING and not instance.vnc_port:
            reason = _("The instance runs, but its host gave it no VNC display (simulated hosts have none).")
        return render(
            request,
            "portal/console_unavailable.html",
            {"instance": instance, "reason": reason, "back": reverse("instance", args=[instance.pk])},
            status=409,
        )
    return render(
        request,
        "portal/console.html",
        {
            "instance": instance,
            "websocket_url": console.websocket_url(token),
            "connect_within_ms": settings.CONSOLE_CONNECT_SECONDS * 1000,
        },
    )


# -- self-help: console log, rescue, install ISO ---------------------------------------------------

# How much of the console log the instance page shows.
CONSOLE_LOG_BYTES = 16 * 1024
SELF_HELP = {
    "rescue": (
        services.instance_rescue,
        gettext_lazy("Rescue of {name} requested: its disk becomes the rescue system's vdb."),
    ),
    "unrescue": (services.instance_unrescue, "{name} leaves rescue and boots its own disk again."),
    "detach-iso": (
        services.instance_detach_iso,
        gettext_lazy("The ISO comes out of {name}; it boots from its disk from now on."),
    ),
}


@require_GET
@tenant_page
def console_log(request, actor: Actor, pk):
    """htmx: the end of the instance's serial console log, read from its host through libvirt."""
    instance = get_scoped(actor, _instances(actor), pk)
    context = {"instance": instance, "text": "", "error": ""}
    try:
        context["text"] = services.console_log(instance=instance, max_bytes=CONSOLE_LOG_BYTES).decode(errors="replace")
    except REFUSALS as exc:
        context["error"] = why(exc)
    return render(request, "portal/instances/_console_log.html", context)


@require_POST
@tenant_page
def self_help(request, actor: Actor, pk, action: str):
    if action not in SELF_HELP:
        raise Http404(_("No such action."))
    instance = get_scoped(actor, _instances(actor), pk)
    require_role(actor, Role.MEMBER)
    call, done = SELF_HELP[action]
    try:
        call(actor=actor, instance=instance)
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(request, done.format(name=instance.name))
    return redirect("instance", pk=instance.pk)
