"""What every tenant page shares: who is acting, which role a write needs, why a service refused."""

from __future__ import annotations

import hashlib
import time
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseNotModified
from django.utils.translation import gettext as _

from base.errors import Invalid, Refused
from portal.i18n import refusal_text
from tenants.access import Actor, actor_for_request
from tenants.models import Role

# What services raise when they refuse (base.errors): shown to the person, never a 500.
REFUSALS = Refused


def why(exc: Refused) -> str:
    """The sentence a refusal carries, in the page's language."""
    return refusal_text(exc)


def refuse_on_form(form, exc: Refused, *, fields: dict[str, str | None] | None = None) -> None:
    """Show a refusal on the form: next to the field it names (`fields` maps a service's field
    name to the form's, None for none), else above the form."""
    field = getattr(exc, "field", None) if isinstance(exc, Invalid) else None
    field = (fields or {}).get(field, field)
    form.add_error(field if field in form.fields else None, why(exc))


def tenant_page(view):
    """Log in first, then call view(request, actor, ...) for the tenant the session acts for."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        actor = actor_for_request(request)
        if actor is None:
            raise Http404(_("You are not a member of any tenant."))
        return view(request, actor, *args, **kwargs)

    return wrapper


def require_role(actor: Actor, needed: str = Role.MEMBER) -> None:
    """403 unless the actor's role in the tenant allows this write."""
    if not actor.may_write(needed):
        raise PermissionDenied(
            _("This needs the %(needed)s role in %(tenant)s; you are %(role)s.")
            % {"needed": needed, "tenant": actor.tenant.name, "role": actor.role}
        )


def staff_page(view):
    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied(_("The operator dashboard is for staff only."))
        return view(request, *args, **kwargs)

    return wrapper


# -- live fragments -----------------------------------------------------------------------------
# Polled fragments carry a version (data-etag) computed from the few fields they show; the
# browser sends it back as If-None-Match (portal.js) and an unchanged fragment is a 304 with no
# body, which htmx leaves alone (responseHandling in base.html). Rendering, and the costs that
# billing computes for it, happen only when something shown has changed.


def minute() -> int:
    """A version part that changes once a minute: figures like the cost so far follow time."""
    return int(time.time() // 60)


def version_of(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def unchanged(request, version: str) -> HttpResponse | None:
    """The 304 answer if the browser already shows this version, else None."""
    sent = [
        tag.strip().strip('"').removeprefix("W/").strip('"')
        for tag in request.headers.get("If-None-Match", "").split(",")
    ]
    if version in sent:
        return versioned(HttpResponseNotModified(), version)
    return None


def versioned(response: HttpResponse, version: str) -> HttpResponse:
    response["ETag"] = f'"{version}"'
    response["Cache-Control"] = "no-cache, private"
    return response
