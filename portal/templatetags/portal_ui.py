"""Template helpers of the browser UI: Bootstrap classes on form widgets, the tenant menu, badges."""

from __future__ import annotations

from decimal import Decimal

from django import forms, template

from compute.models import InstanceState
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


@register.filter
def mib(value) -> str:
    """Memory for people: 512 MiB, 2 GiB, 1.5 GiB."""
    if value is None:
        return "—"
    value = int(value)
    if value >= 1024:
        gib = value / 1024
        return f"{gib:.0f} GiB" if gib == int(gib) else f"{gib:.1f} GiB"
    return f"{value} MiB"


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


@register.filter
def percent(value) -> str:
    """An SLA or a share without trailing zeros: 99.900 -> 99.9."""
    if value in (None, ""):
        return "—"
    return format(Decimal(value).normalize(), "f")
