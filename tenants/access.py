"""The one place that decides which tenant a request acts for, and with which rights.

Every tenant-owned row is reached through `scoped()` or `get_scoped()`: a row of another
tenant and a row that does not exist give the same 404, so ids leak nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404

from tenants.models import AccessKey, ApiToken, Membership, Role, Tenant, User, role_at_least

SESSION_TENANT_KEY = "tenant_id"


@dataclass(frozen=True)
class Actor:
    """A user acting for one tenant, with a role there, perhaps through an API token or an EC2
    access key (portal/ec2/)."""

    user: User
    tenant: Tenant
    role: str
    token: ApiToken | None = None
    access_key: AccessKey | None = None

    def has_role(self, needed: str) -> bool:
        return role_at_least(self.role, needed)

    @property
    def token_read_only(self) -> bool:
        credential = self.token or self.access_key
        return credential is not None and credential.scope == ApiToken.Scope.READ

    def may_write(self, needed: str = Role.MEMBER) -> bool:
        return self.has_role(needed) and not self.token_read_only


def operator_actor(user: User, tenant: Tenant | None = None) -> Actor:
    """An operator (staff) acting from the admin, on a tenant's things or on none (hosts,
    public images): recorded as the user in the audit log and on action rows."""
    return Actor(user=user, tenant=tenant, role=Role.OWNER)


def actor_for_request(request) -> Actor | None:
    """The actor of a request: the token's tenant, or the tenant chosen in the session.

    Cached on the request; None for anonymous users and for users with no membership.
    """
    cached = getattr(request, "_portal_actor", False)
    if cached is not False:
        return cached
    actor = _resolve(request)
    request._portal_actor = actor
    # DRF's Request proxies attribute reads to the Django request but not writes.
    if hasattr(request, "_request"):
        request._request._portal_actor = actor
    return actor


def _resolve(request) -> Actor | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        if hasattr(token, "member_role"):  # loaded with the token by tenants.tokens
            return Actor(user, token.tenant, token.member_role, token) if token.member_role else None
        membership = Membership.objects.select_related("tenant").filter(user=user, tenant_id=token.tenant_id).first()
        return Actor(user, membership.tenant, membership.role, token) if membership else None
    memberships = Membership.objects.select_related("tenant").filter(user=user)
    wanted = request.session.get(SESSION_TENANT_KEY) if hasattr(request, "session") else None
    chosen = None
    if wanted:
        chosen = memberships.filter(tenant_id=wanted).first()
    if chosen is None:
        # Personal tenant first, then the oldest membership.
        chosen = memberships.order_by("-tenant__personal", "created_at").first()
    return Actor(user, chosen.tenant, chosen.role) if chosen else None


def switch_tenant(request, tenant_id) -> Actor:
    """Make tenant_id the session's tenant; 404 unless the user is a member of it."""
    membership = Membership.objects.select_related("tenant").filter(user=request.user, tenant_id=tenant_id).first()
    if membership is None:
        raise Http404("No such tenant.")
    request.session[SESSION_TENANT_KEY] = str(membership.tenant_id)
    actor = Actor(request.user, membership.tenant, membership.role)
    request._portal_actor = actor
    return actor


def scoped(actor: Actor, queryset: QuerySet) -> QuerySet:
    """Rows of the actor's tenant only. Every tenant-owned model has a `tenant` field."""
    return queryset.filter(tenant_id=scoped_tenant_id(actor))


def scoped_tenant_id(actor: Actor):
    """The one tenant whose rows the actor sees: what `scoped` filters a queryset on, and what
    a written-out query of tenant-owned rows filters its `tenant_id` on."""
    return actor.tenant.pk


def get_scoped(actor: Actor, queryset: QuerySet, pk) -> Model:
    """One row of the actor's tenant, or 404 for foreign, missing and malformed ids alike."""
    return get_or_404(scoped(actor, queryset), pk)


def get_or_404(queryset: QuerySet, pk) -> Model:
    """One row of an already scoped queryset, or 404."""
    try:
        return queryset.get(pk=pk)
    # A malformed UUID raises ValidationError; it is as unknown as a missing row.
    except (queryset.model.DoesNotExist, ValidationError, ValueError, TypeError):
        raise Http404("Not found.") from None
