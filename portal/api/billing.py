from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import exports, selectors
from billing.models import Invoice, InvoiceLine
from portal.api.viewsets import TenantScopedViewSet
from tenants.access import actor_for_request
from tenants.models import Role


class TrafficSerializer(serializers.Serializer):
    sent_bytes = serializers.IntegerField()
    allowance_bytes = serializers.IntegerField()
    percent = serializers.DecimalField(max_digits=8, decimal_places=1)
    policy = serializers.CharField()
    throttled = serializers.BooleanField()


class InstanceUsageSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="instance.pk")
    name = serializers.CharField(source="instance.name")
    cost_so_far = serializers.DecimalField(source="cost", max_digits=14, decimal_places=2)
    running_seconds = serializers.IntegerField()
    traffic = TrafficSerializer()


class UsageSerializer(serializers.Serializer):
    period = serializers.DateField()
    currency = serializers.CharField()
    total_so_far = serializers.DecimalField(source="total", max_digits=14, decimal_places=2)
    instances = InstanceUsageSerializer(many=True)


class UsageView(APIView):
    """Month to date: each instance's cost so far (before tax) and traffic against its allowance."""

    read_role = Role.OWNER

    @extend_schema(responses=UsageSerializer)
    def get(self, request):
        report = selectors.month_to_date(tenant=actor_for_request(request).tenant)
        return Response(UsageSerializer(report).data)


class InvoiceLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = InvoiceLine
        fields = ["kind", "description", "instance", "quantity", "unit", "unit_price", "amount", "detail"]


class InvoiceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "period",
            "state",
            "currency",
            "subtotal",
            "tax_rate",
            "tax",
            "total",
            "issued_at",
            "due_at",
            "paid_at",
        ]


class InvoiceDetailSerializer(InvoiceSerializer):
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta(InvoiceSerializer.Meta):
        fields = [*InvoiceSerializer.Meta.fields, "lines"]


class InvoiceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """The tenant's invoices (drafts stay with operators until issued); CSV and PDF downloads."""

    queryset = Invoice.objects.exclude(state=Invoice.State.DRAFT)
    serializer_class = InvoiceSerializer
    read_role = Role.OWNER

    def get_serializer_class(self):
        return InvoiceDetailSerializer if self.action == "retrieve" else InvoiceSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        return queryset.prefetch_related("lines") if self.action == "retrieve" else queryset

    @extend_schema(responses={(200, "text/csv"): str})
    @action(detail=True, methods=["get"])
    def csv(self, request, pk=None):
        invoice = self.get_object()
        response = HttpResponse(exports.invoice_csv(invoice), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{invoice.number or invoice.pk}.csv"'
        return response

    @extend_schema(responses={(200, "application/pdf"): bytes})
    @action(detail=True, methods=["get"])
    def pdf(self, request, pk=None):
        invoice = self.get_object()
        response = HttpResponse(exports.invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice.number or invoice.pk}.pdf"'
        return response
