"""The Firewall page: the tenant's security groups and their rules (compute.security_groups),
and the security groups of one instance, attached and detached on its page."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from base.errors import Invalid
from compute import security_groups
from compute.models import Instance, InstanceState, SecurityGroup, SecurityGroupRule
from portal.forms import DIRECTION_CHOICES, PROTOCOL_CHOICES, RuleForm, SecurityGroupForm
from portal.i18n import group_description, group_name
from portal.views.guards import REFUSALS, refuse_on_form, require_role, tenant_page, why
from tenants.access import Actor, get_or_404, get_scoped, scoped
from tenants.models import Role

R = SecurityGroupRule
# The rule form's fields by the names compute.security_groups gives them in its refusals.
RULE_FIELDS = {"remote_group_id": "remote_group", "rules": None, "security_group_id": None}


def rule_row(rule: SecurityGroupRule) -> dict:
    """A rule in words: direction, protocol, ports, the other end, its description."""
    if rule.port_min is None:
        ports = _("all ports") if rule.protocol in (R.Protocol.TCP, R.Protocol.UDP, R.Protocol.ANY) else "—"
    elif rule.port_min == rule.port_max:
        ports = str(rule.port_min)
    else:
        ports = f"{rule.port_min}–{rule.port_max}"
    if rule.remote_group_id:
        remote, anywhere = _("instances in %(group)s") % {"group": group_name(rule.remote_group)}, False
    else:
        remote, anywhere = rule.cidr, rule.cidr == "0.0.0.0/0"
    return {
        "rule": rule,
        "direction": str(dict(DIRECTION_CHOICES).get(rule.direction, rule.direction)),
        "protocol": str(dict(PROTOCOL_CHOICES).get(rule.protocol, rule.protocol)),
        "ports": ports,
        "remote": remote,
        "anywhere": anywhere,
        "inbound": rule.direction == R.Direction.INGRESS,
    }


def _rule_form_ids(group: SecurityGroup) -> str:
    """Ids of a group's rule form: one form per group on the page, the field names all alike."""
    return f"id_rule-{group.pk.hex[:12]}-%s"


def _groups(actor: Actor):
    live = ~Q(instances__state=InstanceState.DELETED)
    # A GROUP BY query drops the model's ordering: the default group first, then by name.
    return (
        scoped(actor, SecurityGroup.objects)
        .annotate(members=Count("instances", filter=live))
        .order_by("-is_default", "name")
    )


def _firewall_page(
    request,
    actor: Actor,
    *,
    group_form: SecurityGroupForm | None = None,
    rule_form: RuleForm | None = None,
    rule_form_group=None,
    status: int = 200,
):
    """The page, with a form that was sent and refused shown again as it was typed."""
    security_groups.default_group(actor.tenant)  # every tenant has one to show
    groups = list(_groups(actor).prefetch_related("rules__remote_group"))
    cards = []
    for group in groups:
        form = rule_form if rule_form is not None and rule_form_group == group.pk else None
        cards.append(
            {
                "group": group,
                "description": group_description(group),
                "rules": [rule_row(rule) for rule in group.rules.all()],
                "rule_form": form or RuleForm(groups=groups, auto_id=_rule_form_ids(group)),
            }
        )
    context = {
        "actor": actor,
        "cards": cards,
        "group_form": group_form or SecurityGroupForm(),
        "can_manage": actor.may_write(Role.MEMBER),
    }
    return render(request, "portal/tenant/firewall.html", context, status=status)


def _status(exc) -> int:
    return 400 if isinstance(exc, Invalid) else 409


@tenant_page
def firewall(request, actor: Actor):
    """GET lists the groups; POST makes a new one (refused: shown next to the field, as typed)."""
    if request.method != "POST":
        return _firewall_page(request, actor)
    require_role(actor, Role.MEMBER)
    form = SecurityGroupForm(request.POST)
    if not form.is_valid():
        return _firewall_page(request, actor, group_form=form, status=400)
    try:
        group = security_groups.group_create(actor=actor, **form.cleaned_data)
    except REFUSALS as exc:
        refuse_on_form(form, exc)
        return _firewall_page(request, actor, group_form=form, status=_status(exc))
    messages.success(request, _("Security group %(name)s created. Add its rules below.") % {"name": group_name(group)})
    return redirect(f"{reverse('tenant-firewall')}#group-{group.pk}")


@tenant_page
def group_edit(request, actor: Actor, pk):
    """GET shows the name and description; POST saves them, or shows why not next to the field."""
    group = get_scoped(actor, SecurityGroup.objects, pk)
    initial = {"name": group.name, "description": group_description(group)}
    form = SecurityGroupForm(initial=initial, default=group.is_default)
    status = 200
    if request.method == "POST":
        require_role(actor, Role.MEMBER)
        form = SecurityGroupForm(request.POST, initial=initial, default=group.is_default)
        if form.is_valid():
            try:
                saved = security_groups.group_update(actor=actor, group=group, **form.cleaned_data)
            except REFUSALS as exc:
                refuse_on_form(form, exc)
                status = _status(exc)
            else:
                messages.success(request, _("Security group %(name)s saved.") % {"name": group_name(saved)})
                return redirect(f"{reverse('tenant-firewall')}#group-{saved.pk}")
        else:
            status = 400
    return render(
        request, "portal/tenant/firewall_group_edit.html", {"actor": actor, "group": group, "form": form}, status=status
    )


@tenant_page
def group_delete(request, actor: Actor, pk):
    """GET asks first; POST deletes (refused while instances or other groups' rules use it)."""
    group = get_scoped(actor, _groups(actor), pk)
    if request.method != "POST":
        return render(request, "portal/tenant/firewall_group_delete.html", {"actor": actor, "group": group})
    require_role(actor, Role.MEMBER)
    try:
        security_groups.group_delete(actor=actor, group=group)
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(request, _("Security group %(name)s deleted.") % {"name": group_name(group)})
    return redirect("tenant-firewall")


@require_POST
@tenant_page
def rule_add(request, actor: Actor, pk):
    group = get_scoped(actor, SecurityGroup.objects, pk)
    require_role(actor, Role.MEMBER)
    groups = list(scoped(actor, SecurityGroup.objects))
    form = RuleForm(request.POST, groups=groups, auto_id=_rule_form_ids(group))
    status = 400
    if form.is_valid():
        try:
            security_groups.rule_add(actor=actor, group=group, request=form.rule_request())
        except REFUSALS as exc:
            refuse_on_form(form, exc, fields=RULE_FIELDS)
            status = _status(exc)
        else:
            messages.success(
                request,
                _("Rule added to %(name)s; running instances follow within seconds.") % {"name": group_name(group)},
            )
            return redirect(f"{reverse('tenant-firewall')}#group-{group.pk}")
    return _firewall_page(request, actor, rule_form=form, rule_form_group=group.pk, status=status)


@require_POST
@tenant_page
def rule_delete(request, actor: Actor, pk):
    rule = get_or_404(SecurityGroupRule.objects.filter(group__tenant=actor.tenant).select_related("group"), pk)
    require_role(actor, Role.MEMBER)
    try:
        security_groups.rule_delete(actor=actor, rule=rule)
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(
            request,
            _("Rule removed from %(name)s; running instances follow within seconds.")
            % {"name": group_name(rule.group)},
        )
    return redirect(f"{reverse('tenant-firewall')}#group-{rule.group_id}")


# -- one instance's groups (the Firewall card of the instance page) -----------------------------


@require_POST
@tenant_page
def instance_attach(request, actor: Actor, pk):
    instance = get_scoped(actor, Instance.objects, pk)
    require_role(actor, Role.MEMBER)
    try:
        group = security_groups.instance_attach(
            actor=actor, instance=instance, group_id=request.POST.get("security_group", "")
        )
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(
            request,
            _("%(name)s joined the security group %(group)s.") % {"name": instance.name, "group": group_name(group)},
        )
    return redirect(f"{reverse('instance', args=[instance.pk])}#firewall")


@require_POST
@tenant_page
def instance_detach(request, actor: Actor, pk, group_pk):
    instance = get_scoped(actor, Instance.objects, pk)
    group = get_scoped(actor, SecurityGroup.objects, group_pk)
    require_role(actor, Role.MEMBER)
    try:
        security_groups.instance_detach(actor=actor, instance=instance, group_id=str(group.pk))
    except REFUSALS as exc:
        messages.error(request, why(exc))
    else:
        messages.success(
            request,
            _("%(name)s left the security group %(group)s.") % {"name": instance.name, "group": group_name(group)},
        )
    return redirect(f"{reverse('instance', args=[instance.pk])}#firewall")
