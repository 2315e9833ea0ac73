"""Routes of the catalogue a tenant chooses from: OS images and flavors."""

from __future__ import annotations

from rest_framework import mixins, serializers, viewsets
from rest_framework.permissions import AllowAny

from compute import hosts as host_services
from compute.models import Flavor, Image
from compute.selectors import images_visible_filter
from portal.api.viewsets import TenantScopedViewSet


class ImageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = [
            "id",
            "name",
            "os_family",
            "os_version",
            "format",
            "size_bytes",
            "checksum",
            "min_disk_gb",
            "min_memory_mb",
            "visibility",
            "state",
            "created_at",
        ]


class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet):
    """Public images and the tenant's own snapshots. DELETE retires a snapshot."""

    queryset = Image.objects.exclude(state=Image.State.DELETED)
    serializer_class = ImageSerializer

    def scope(self, queryset):
        return queryset.filter(images_visible_filter(self.actor.tenant))

    def perform_destroy(self, image):
        if image.tenant_id != self.actor.tenant.pk:
            self.permission_denied(self.request, "Public images are managed by operators.")
        host_services.image_delete(actor=self.actor, image=image)


class FlavorSerializer(serializers.ModelSerializer):
    class Meta:
        model = Flavor
        fields = [
            "id",
            "name",
            "vcpus",
            "memory_mb",
            "disk_gb",
            "bandwidth_mbit",
            "traffic_gb",
            "sla_percent",
            "ha",
        ]


class FlavorViewSet(viewsets.ReadOnlyModelViewSet):
    """The catalogue of standard sizes; readable without logging in."""

    queryset = Flavor.objects.filter(active=True)
    serializer_class = FlavorSerializer
    permission_classes = [AllowAny]
    pagination_class = None
