"""Instance pages: the dashboard, create, one instance with its actions, charts and log, its console."""

from __future__ import annotations

import re

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from billing import selectors as billing_selectors
from compute import console, services
from compute.models import Instance, InstanceAction, InstanceState
from compute.operations import PROVISION_STEPS
from compute.selectors import tenant_resource_usage
from compute.sizing import Size
from compute.transitions import STABLE_STATES, allowed_actions
from portal import billing_hooks
from portal.forms import InstanceCreateForm, RebuildForm, ResizeForm, SizeForm, SnapshotForm
from portal.views.guards import REFUSALS, require_role, tenant_page, why
from tenants.access import Actor, get_scoped, scoped
from tenants.models import Quota, Role

# Actions that are one click (a POST form on the instance page); the others have a page of their own.
POWER_ACTIONS = {"start": services.instance_start, "stop": services.instance_stop, "reboot": services.instance_reboot}
LOG_LENGTH = 50
# Form fields the services name in InvalidRequest, by their name in the create form.
SERVICE_FIELDS = {"ssh_key_ids": "ssh_keys", "size": None}


def _instances(actor: Actor):
    return scoped(actor, Instance.objects.select_related("image", "flavor"))


# States in which nothing happens by itself: pages stop polling an instance that reached one.
SETTLED = STABLE_STATES | {InstanceState.ERROR, InstanceState.DELETED}


def _in_flight(instances) -> bool:
    return any(i.state not in SETTLED for i in instances)


# -- the dashboard ---------------------------------------------------------------------------------


# Instances per dashboard page: each row's cost is computed live, and the rows are polled.
DASHBOARD_PAGE = 50


@require_GET
@tenant_page
def dashboard(request, actor: Actor):
    live = _instances(actor).exclude(state=InstanceState.DELETED).order_by("-created_at", "-id")
    # get_page turns a page number that is not one into the first or last page.
    page = Paginator(live, DASHBOARD_PAGE).get_page(request.GET.get("page"))
    instances = list(page.object_list)
    costs = billing_hooks.costs_so_far(actor.tenant, instances)
    rows = [{"instance": i, "cost": costs[i.pk]} for i in instances]
    context = {"actor": actor, "rows": rows, "polling": _in_flight(instances), "page": page}
    if request.htmx:
        return render(request, "portal/instances/_rows.html", context)
    quota = Quota.objects.filter(tenant=actor.tenant).first()
    usage = tenant_resource_usage(actor.tenant)
    context["quota"] = [
        {"name": name, "label": label, "used": usage[name], "limit": getattr(quota, name, 0)}
        for name, label in [("instances", "Instances"), ("vcpus", "vCPUs"), ("memory_mb", "Memory")]
    ]
    context["can_write"] = actor.may_write(Role.MEMBER)
    return render(request, "portal/instances/dashboard.html", context)


# -- create ----------------------------------------------------------------------------------------


@tenant_page
def create(request, actor: Actor):
    if request.method != "POST":
        return _create_page(request, actor, InstanceCreateForm(actor=actor))
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
    )
    try:
        instance = services.instance_create(actor=actor, request=create_request)
    except services.InvalidRequest as exc:
        field = SERVICE_FIELDS.get(exc.field, exc.field)
        form.add_error(field if field in form.fields else None, exc.message)
        return _create_page(request, actor, form, status=400)
    except REFUSALS as exc:
        form.add_error(None, why(exc))
        return _create_page(request, actor, form, status=409)
    messages.success(request, f"{instance.name} is being built. Its address is {instance.ip_address}.")
    return redirect("instance", pk=instance.pk)


def _create_page(request, actor: Actor, form: InstanceCreateForm, status: int = 200):
    context = {
        "actor": actor,
        "form": form,
        "image_groups": image_groups([{"widget": w, "image": w.data["value"].instance} for w in form["image"]]),
        "can_write": actor.may_write(Role.MEMBER),
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
                "label": "Your snapshots",
                "versions": [{"version": "", "label": "Snapshots", "cards": snapshots}],
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
                "price": billing_hooks.monthly_estimate(Size.of_flavor(flavor), flavor.pk),
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
        return {"size": None, "price": billing_hooks.NOT_YET}
    size = probe.size()
    # A standard flavor has its own price; only a custom size is priced by its parts.
    return {"size": size, "price": billing_hooks.monthly_estimate(size, probe.flavor_id())}


@require_GET
@tenant_page
def create_price(request, actor: Actor):
    """htmx: the summary and monthly price of the size the create (or resize) form shows now."""
    form = SizeForm(request.GET)
    return render(request, "portal/instances/_price.html", {"price": _price(form)})


# -- one instance ----------------------------------------------------------------------------------


def _steps(instance: Instance, actions: list[InstanceAction]) -> dict | None:
    """The latest action's steps, as its log records them; for a build, the steps still to come."""
    requests = [a for a in actions if not a.step]
    if not requests:
        return None
    latest = requests[-1]
    ran = {}
    for row in actions:
        if row.step and row.id > latest.id:
            ran[row.step] = row  # a step run twice (a redelivered task) shows its last run
    expected = list(PROVISION_STEPS) if latest.action in ("create", "retry") else []
    names = expected + [name for name in ran if name not in expected]
    steps = [{"name": name, "row": ran.get(name)} for name in names]
    done = sum(1 for s in steps if s["row"] and s["row"].status == InstanceAction.Status.DONE)
    return {"action": latest, "steps": steps, "done": done, "total": len(steps) or 1}


def _live_context(actor: Actor, instance: Instance) -> dict:
    actions = list(instance.actions.select_related("user").order_by("id"))
    allowed = allowed_actions(instance.state) if actor.may_write(Role.MEMBER) else []
    steps = _steps(instance, actions)
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
        "polling": instance.state not in SETTLED,
        "console_ready": instance.state == InstanceState.RUNNING and actor.may_write(Role.MEMBER),
        "cost": billing_hooks.cost_so_far(instance),
    }


@require_GET
@tenant_page
def detail(request, actor: Actor, pk):
    instance = get_scoped(actor, _instances(actor), pk)
    context = {**_live_context(actor, instance), "throttle_reason": billing_selectors.throttle_reason(instance)}
    return render(request, "portal/instances/detail.html", context)


@require_GET
@tenant_page
def live(request, actor: Actor, pk):
    """htmx: the part of the instance page that changes (state, progress, actions, log)."""
    instance = get_scoped(actor, _instances(actor), pk)
    return render(request, "portal/instances/_live.html", _live_context(actor, instance))


@require_GET
@tenant_page
def usage(request, actor: Actor, pk):
    """Chart data of the instance page."""
    instance = get_scoped(actor, _instances(actor), pk)
    return JsonResponse(billing_hooks.usage_series(instance))


@require_POST
@tenant_page
def power(request, actor: Actor, pk, action: str):
    if action not in POWER_ACTIONS:
        raise Http404("No such action.")
    instance = get_scoped(actor, _instances(actor), pk)
    require_role(actor, Role.MEMBER)
    try:
        POWER_ACTIONS[action](actor=actor, instance=instance)
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(request, f"{action.capitalize()} of {instance.name} requested.")
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
        messages.success(request, f"{instance.name} is being deleted; its disk and address are released.")
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
            "allowed": action in allowed_actions(instance.state),
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
        lambda _: f"Resize of {instance.name} requested.",
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
        lambda _: f"Rebuild of {instance.name} requested: its disk starts afresh.",
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
        lambda image: f"Snapshot {image.name} is being taken; it becomes an image of this tenant.",
    )


def _submit(request, actor: Actor, instance, action: str, form, call, done):
    """The POST of an action page: validate, call the service, and show a refusal next to the
    field it names (or above the form); on success, back to the instance with `done(result)`."""
    if form.is_valid():
        try:
            result = call()
        except services.InvalidRequest as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        except REFUSALS as exc:
            form.add_error(None, why(exc))
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
            reason = "The instance runs, but its host gave it no VNC display (simulated hosts have none)."
        return render(
            request,
            "portal/console_unavailable.html",
            {"instance": instance, "reason": reason, "back": reverse("instance", args=[instance.pk])},
            status=409,
        )
    return render(request, "portal/console.html", {"instance": instance, "websocket_url": console.websocket_url(token)})
