"""The base every tenant-owned API resource is built on."""

from __future__ import annotations

from rest_framework import viewsets

from tenants.access import Actor, actor_for_request, get_or_404, scoped


class TenantScopedViewSet(viewsets.GenericViewSet):
    """A viewset whose rows all belong to the request's tenant.

    `queryset` names the model; what the view sees is always narrowed to the actor's tenant,
    and `get_object()` answers 404 for another tenant's rows. The isolation test walks every
    subclass routed under /api/v1/, so a new resource is covered as soon as it is routed.
    """

    lookup_value_regex = "[^/]+"

    @property
    def actor(self) -> Actor:
        return actor_for_request(self.request)

    def scope(self, queryset):
        """Narrow to what the actor's tenant may see; images widen this to public rows."""
        return scoped(self.actor, queryset)

    def get_queryset(self):
        return self.scope(super().get_queryset())

    def get_object(self):
        obj = get_or_404(self.get_queryset(), self.kwargs["pk"])
        self.check_object_permissions(self.request, obj)
        return obj
