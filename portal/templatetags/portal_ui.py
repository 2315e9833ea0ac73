"""Template helpers of the browser UI: Bootstrap classes on form widgets, the tenant menu, badges."""

from __future__ import annotations

from django import forms, template
from django.conf import settings
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext, pgettext_lazy

from base import units
from compute.models import InstanceState
from portal import i18n
from portal.forms import ROLE_CHOICES
from tenants.access import actor_for_request
from tenants.models import Membership

register = template.Library()

STATE_COLOURS = {
    InstanceState.RUNNING: "success",
    InstanceState.STOPPED: "secondary",
    InstanceState.ERROR: "danger",
    InstanceState.DELETED: "dark",
}


def _widget_class(widget: forms.Widget) -> str:
    if isinstance(widget, forms.CheckboxInput | forms.RadioSelect | forms.CheckboxSelectMultiple):
        return "form-check-input"
    if isinstance(widget, forms.Select):
        return "form-select"
    if getattr(widget, "input_type", "") == "range":
        return "form-range"
    return "form-control"


@register.filter
def bs(field: forms.BoundField, extra: str = "") -> str:
    """The field's widget with Bootstrap's classes, marked invalid (and described) when it has errors."""
    classes = [_widget_class(field.field.widget), extra]
    attrs = {}
    if field.errors:
        classes.append("is-invalid")
        attrs["aria-invalid"] = "true"
        attrs["aria-describedby"] = f"{field.auto_id}-errors"
    elif field.help_text:
        attrs["aria-describedby"] = f"{field.auto_id}-help"
    existing = field.field.widget.attrs.get("class", "")
    attrs["class"] = " ".join(c for c in [existing, *classes] if c)
    return field.as_widget(attrs=attrs)


@register.filter
def state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, "warning")


# The number formats live in base.units; these names stay for older templates.
register.filter("mib", units.mib)
register.filter("percent", units.percent)


# libvirt's words for a domain's state, in a customer's.
POWER_LABELS = {
    "running": _("On"),
    "shutoff": _("Off"),
    "shutdown": _("Shutting down"),
    "paused": _("Paused"),
    "pmsuspended": _("Suspended"),
    "blocked": _("On"),
    "crashed": _("Crashed"),
    "nostate": _("Unknown"),
}


@register.filter
def power_label(power_state: str) -> str:
    return str(POWER_LABELS.get(power_state or "", POWER_LABELS["nostate"]))


@register.filter
def role_label(role: str) -> str:
    """A member's role in the reader's language (tenants.models keeps the codes)."""
    return str(dict(ROLE_CHOICES).get(role, role))


# The labels of the models' choices (states and statuses of compute, billing and tenants, which
# keep them in English) and the traffic policies' codes, marked here for the catalogue under the
# context "status" (Suspended is 已暂停 for a tenant, not the 已挂起 of a power state).
STATUS_LABELS = [
    pgettext_lazy("status", "Building"),
    pgettext_lazy("status", "Running"),
    pgettext_lazy("status", "Stopping"),
    pgettext_lazy("status", "Stopped"),
    pgettext_lazy("status", "Starting"),
    pgettext_lazy("status", "Rebooting"),
    pgettext_lazy("status", "Resizing"),
    pgettext_lazy("status", "Rebuilding"),
    pgettext_lazy("status", "Snapshotting"),
    pgettext_lazy("status", "Deleting"),
    pgettext_lazy("status", "Deleted"),
    pgettext_lazy("status", "Error"),
    pgettext_lazy("status", "Detaching ISO"),
    pgettext_lazy("status", "Entering rescue"),
    pgettext_lazy("status", "Rescue"),
    pgettext_lazy("status", "Leaving rescue"),
    pgettext_lazy("status", "Migrating"),
    pgettext_lazy("status", "Host down"),
    pgettext_lazy("status", "Restarting on another host"),
    pgettext_lazy("status", "Requested"),
    pgettext_lazy("status", "Done"),
    pgettext_lazy("status", "Failed"),
    pgettext_lazy("status", "Up"),
    pgettext_lazy("status", "Down"),
    pgettext_lazy("status", "Disabled"),
    pgettext_lazy("status", "Pending"),
    pgettext_lazy("status", "Active"),
    pgettext_lazy("status", "Suspended"),
    pgettext_lazy("status", "Draft"),
    pgettext_lazy("status", "Issued"),
    pgettext_lazy("status", "Paid"),
    pgettext_lazy("status", "Void"),
    pgettext_lazy("status", "KVM"),
    pgettext_lazy("status", "QEMU (software emulation)"),
    pgettext_lazy("status", "libvirt test driver"),
    pgettext_lazy("status", "bill"),
    pgettext_lazy("status", "throttle"),
]


@register.filter
def status_label(label) -> str:
    """A choice's label (`obj.get_state_display`) in the reader's language."""
    return pgettext("status", str(label))


# The codes of the action log (InstanceAction.action and .step) and of the audit log
# (AuditEvent.action) stay as they are in the database and the API; pages show these labels.
# A code without a label (one added later) is shown as it is.
ACTION_LABELS = {
    "create": pgettext_lazy("action log", "Create"),
    "retry": pgettext_lazy("action log", "Retry"),
    "start": pgettext_lazy("action log", "Start"),
    "stop": pgettext_lazy("action log", "Stop"),
    "reboot": pgettext_lazy("action log", "Reboot"),
    "resize": pgettext_lazy("action log", "Resize"),
    "rebuild": pgettext_lazy("action log", "Rebuild"),
    "snapshot": pgettext_lazy("action log", "Snapshot"),
    "delete": pgettext_lazy("action log", "Delete"),
    "detach_iso": pgettext_lazy("action log", "Detach ISO"),
    "rescue": pgettext_lazy("action log", "Rescue"),
    "unrescue": pgettext_lazy("action log", "Leave rescue"),
    "reset_password": pgettext_lazy("action log", "Reset password"),
    "throttle": pgettext_lazy("action log", "Throttle"),
    "unthrottle": pgettext_lazy("action log", "Unthrottle"),
    "sync": pgettext_lazy("action log", "Sync with host"),
    "migrate": pgettext_lazy("action log", "Migrate"),
    "evacuate": pgettext_lazy("action log", "Restart on another host"),
}
STEP_LABELS = {
    "image": pgettext_lazy("action step", "Image"),
    "disk": pgettext_lazy("action step", "Disk"),
    "seed": pgettext_lazy("action step", "Cloud-init seed"),
    "dhcp": pgettext_lazy("action step", "DHCP entry"),
    "firewall": pgettext_lazy("action step", "Firewall"),
    "prepare": pgettext_lazy("action step", "Prepare target"),
    "migrate": pgettext_lazy("action step", "Live migration"),
    "export": pgettext_lazy("action step", "Export disk"),
    "import": pgettext_lazy("action step", "Copy disk"),
    "switch": pgettext_lazy("action step", "Switch host"),
    "cleanup": pgettext_lazy("action step", "Clean up source"),
    "define": pgettext_lazy("action step", "Define"),
    "start": pgettext_lazy("action step", "Start"),
    "stop": pgettext_lazy("action step", "Stop"),
    "reboot": pgettext_lazy("action step", "Reboot"),
    "wipe": pgettext_lazy("action step", "Wipe"),
    "copy": pgettext_lazy("action step", "Copy"),
    "eject": pgettext_lazy("action step", "Eject"),
    "destroy": pgettext_lazy("action step", "Destroy"),
    "resume": pgettext_lazy("action step", "Resume"),
    "power": pgettext_lazy("action step", "Power state"),
    "agent": pgettext_lazy("action step", "Guest agent"),
    "bandwidth": pgettext_lazy("action step", "Bandwidth"),
    "host_down": pgettext_lazy("action step", "Host down"),
    "host_back": pgettext_lazy("action step", "Host back"),
}
AUDIT_LABELS = {
    "host.status": pgettext_lazy("audit", "Host status changed"),
    "host.drain": pgettext_lazy("audit", "Host drained"),
    "host.evacuate": pgettext_lazy("audit", "Host evacuated"),
    "image.delete": pgettext_lazy("audit", "Image deleted"),
    "image.import": pgettext_lazy("audit", "Image imported"),
    "image.rename": pgettext_lazy("audit", "Image renamed"),
    "instance.create": pgettext_lazy("audit", "Instance created"),
    "instance.rename": pgettext_lazy("audit", "Instance renamed"),
    "instance.reset_password": pgettext_lazy("audit", "Instance password reset"),
    "instance.tags": pgettext_lazy("audit", "Instance tags changed"),
    "instance.start": pgettext_lazy("audit", "Instance started"),
    "instance.stop": pgettext_lazy("audit", "Instance stopped"),
    "instance.reboot": pgettext_lazy("audit", "Instance rebooted"),
    "instance.resize": pgettext_lazy("audit", "Instance resized"),
    "instance.rebuild": pgettext_lazy("audit", "Instance rebuilt"),
    "instance.snapshot": pgettext_lazy("audit", "Snapshot taken"),
    "instance.delete": pgettext_lazy("audit", "Instance deleted"),
    "instance.detach_iso": pgettext_lazy("audit", "ISO detached"),
    "instance.rescue": pgettext_lazy("audit", "Rescue mode entered"),
    "instance.unrescue": pgettext_lazy("audit", "Rescue mode left"),
    "instance.retry": pgettext_lazy("audit", "Instance build retried"),
    "instance.migrate": pgettext_lazy("audit", "Instance migrated"),
    "instance.set_security_groups": pgettext_lazy("audit", "Instance security groups changed"),
    "security_group.create": pgettext_lazy("audit", "Security group created"),
    "security_group.update": pgettext_lazy("audit", "Security group changed"),
    "security_group.delete": pgettext_lazy("audit", "Security group deleted"),
    "security_group.rule_add": pgettext_lazy("audit", "Firewall rule added"),
    "security_group.rule_delete": pgettext_lazy("audit", "Firewall rule removed"),
    "invitation.create": pgettext_lazy("audit", "Invitation sent"),
    "invitation.revoke": pgettext_lazy("audit", "Invitation revoked"),
    "invoice.issue": pgettext_lazy("audit", "Invoice issued"),
    "invoice.paid": pgettext_lazy("audit", "Invoice paid"),
    "invoice.void": pgettext_lazy("audit", "Invoice voided"),
    "membership.join": pgettext_lazy("audit", "Member joined"),
    "membership.remove": pgettext_lazy("audit", "Member removed"),
    "membership.role": pgettext_lazy("audit", "Member's role changed"),
    "sshkey.create": pgettext_lazy("audit", "SSH key added"),
    "sshkey.delete": pgettext_lazy("audit", "SSH key deleted"),
    "tenant.create": pgettext_lazy("audit", "Tenant created"),
    "tenant.update": pgettext_lazy("audit", "Tenant settings changed"),
    "tenant.suspend": pgettext_lazy("audit", "Tenant suspended"),
    "tenant.reactivate": pgettext_lazy("audit", "Tenant reactivated"),
    "token.create": pgettext_lazy("audit", "API token created"),
    "token.revoke": pgettext_lazy("audit", "API token revoked"),
}


@register.filter
def action_label(code: str) -> str:
    """An action-log action (InstanceAction.action) in the reader's language."""
    return str(ACTION_LABELS.get(code, code))


@register.filter
def step_label(code: str) -> str:
    """An action-log step (InstanceAction.step) in the reader's language."""
    return str(STEP_LABELS.get(code, code))


@register.filter
def audit_label(code: str) -> str:
    """An audit event's action code (AuditEvent.action) in the reader's language."""
    return str(AUDIT_LABELS.get(code, code))


register.filter("group_name", i18n.group_name)
register.filter("group_description", i18n.group_description)


@register.simple_tag
def portal_name() -> str:
    return settings.PORTAL_NAME


@register.filter
def percent_of(used, total) -> int:
    return min(100, round(100 * used / total)) if total else 0


@register.simple_tag(takes_context=True)
def current_actor(context):
    """The actor of the page's request (cached on the request), for the layout."""
    request = context.get("request")
    return actor_for_request(request) if request is not None else None


@register.inclusion_tag("portal/_tenant_menu.html", takes_context=True)
def tenant_menu(context) -> dict:
    """The navbar's tenant switcher: every tenant the user belongs to, the current one marked."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if request is None or user is None or not user.is_authenticated:
        return {"actor": None, "memberships": []}
    actor = actor_for_request(request)
    memberships = Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")
    return {
        "actor": actor,
        "memberships": list(memberships),
        "request": request,
        "csrf_token": context.get("csrf_token"),
    }
