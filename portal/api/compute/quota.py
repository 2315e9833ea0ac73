"""The tenant's quota: its limits and what its instances hold now (compute's figures)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from compute.selectors import tenant_resource_usage
from tenants.access import actor_for_request
from tenants.models import Quota


class QuotaSerializer(serializers.Serializer):
    limits = serializers.DictField(child=serializers.IntegerField())
    usage = serializers.DictField(child=serializers.IntegerField())


class QuotaView(APIView):
    """The tenant's limits and what its instances hold now."""

    @extend_schema(responses=QuotaSerializer)
    def get(self, request):
        tenant = actor_for_request(request).tenant
        quota = Quota.objects.get(tenant=tenant)
        limits = {name: getattr(quota, name) for name in Quota.LIMITS}
        return Response({"limits": limits, "usage": tenant_resource_usage(tenant)})
