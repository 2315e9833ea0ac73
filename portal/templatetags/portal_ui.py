"""Template helpers of the browser UI: Bootstrap classes on form widgets, the tenant menu, badges."""

from __future__ import annotations

from django import forms, template
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from compute.models import InstanceState
from portal.forms import ROLE_CHOICES
from portal.templatetags import units
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


# The number formats live in portal.templatetags.units; these names stay for older templates.
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
