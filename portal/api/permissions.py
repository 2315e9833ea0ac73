from rest_framework import exceptions, permissions

from tenants.access import actor_for_request
from tenants.models import ApiToken, Role


class TenantRolePermission(permissions.BasePermission):
    """Reads need the view's `read_role` (default viewer: any member); writes need its
    `write_role` (default member) and a read-write token. A view may refine either per action
    with `action_roles = {"destroy": Role.ADMIN}`.
    """

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        actor = actor_for_request(request)
        if actor is None:
            raise exceptions.PermissionDenied("You are not a member of any tenant.")
        action = getattr(view, "action", None)
        needed = getattr(view, "action_roles", {}).get(action)
        if request.method in permissions.SAFE_METHODS:
            needed = needed or getattr(view, "read_role", Role.VIEWER)
            if not actor.has_role(needed):
                raise exceptions.PermissionDenied(f"This needs the {needed} role in the tenant.")
            return True
        if actor.token_read_only:
            raise exceptions.PermissionDenied("This API token is read-only.")
        needed = needed or getattr(view, "write_role", Role.MEMBER)
        if not actor.has_role(needed):
            raise exceptions.PermissionDenied(f"This needs the {needed} role in the tenant.")
        return True


class WritesNeedAWritableToken(permissions.BasePermission):
    """For views outside any tenant role (accepting an invitation): a read-only token reads only.

    TenantRolePermission and IsStaff check the token's scope themselves.
    """

    def has_permission(self, request, view) -> bool:
        token = getattr(request, "auth", None)
        read_only = isinstance(token, ApiToken) and token.scope == ApiToken.Scope.READ
        if read_only and request.method not in permissions.SAFE_METHODS:
            raise exceptions.PermissionDenied("This API token is read-only: it cannot change anything.")
        return True


class IsStaff(permissions.BasePermission):
    """Operators: staff users, through the session or their own token."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        actor = actor_for_request(request)
        if request.method not in permissions.SAFE_METHODS and actor and actor.token_read_only:
            raise exceptions.PermissionDenied("This API token is read-only.")
        return True
