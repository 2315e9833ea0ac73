from django.contrib import admin, messages
from django.db.models import Sum

from base import units
from base.errors import Conflict
from billing import invoicing, prices, suspension
from billing.models import (
    BillingAccount,
    FlavorPrice,
    Invoice,
    InvoiceLine,
    MeterSample,
    PriceList,
    SlaTier,
    TrafficNotice,
    UsageRecord,
)
from tenants.access import operator_actor
from tenants.admin import TenantAdmin
from tenants.models import Tenant

admin.site.register(PriceList)


# Suspending is billing's: it also stops the tenant's instances, and reactivating starts them.
class BillingTenantAdmin(TenantAdmin):
    actions = ["suspend", "reactivate"]

    @admin.action(description="Suspend the selected tenants (no new or started instances)")
    def suspend(self, request, queryset):
        for tenant in queryset:
            suspension.tenant_suspend(actor=request.user, tenant=tenant, reason=f"Suspended by {request.user.email}.")
        self.message_user(request, f"Suspended {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Reactivate the selected tenants")
    def reactivate(self, request, queryset):
        for tenant in queryset:
            suspension.tenant_reactivate(actor=request.user, tenant=tenant)
        self.message_user(request, f"Reactivated {queryset.count()} tenant(s).", messages.SUCCESS)


admin.site.unregister(Tenant)
admin.site.register(Tenant, BillingTenantAdmin)
admin.site.register(SlaTier, list_display=["sla_percent", "below", "credit_percent"])
admin.site.register(BillingAccount, list_display=["tenant", "tax_rate"], search_fields=["tenant__name"])


@admin.register(FlavorPrice)
class FlavorPriceAdmin(admin.ModelAdmin):
    list_display = ["flavor", "hourly", "monthly_cap", "stopped_policy", "overage_gb", "over_policy"]


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    readonly_fields = ["kind", "description", "quantity", "unit", "unit_price", "amount"]
    fields = readonly_fields


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["number", "tenant", "period", "state", "total", "currency", "due_at", "paid_at"]
    list_filter = ["state", "period"]
    search_fields = ["number", "tenant__name"]
    readonly_fields = ["subtotal", "tax_rate", "tax", "total", "issued_at", "due_at", "paid_at", "number"]
    inlines = [InvoiceLineInline]
    actions = ["issue", "mark_paid", "void"]

    def changelist_view(self, request, extra_context=None):
        # Revenue and what is still unpaid, over the invoices the filters select.
        response = super().changelist_view(request, extra_context)
        if hasattr(response, "context_data") and "cl" in response.context_data:
            selected = response.context_data["cl"].queryset
            # SQLite sums decimals as floats: quantized and formatted like every other amount.
            currency = prices.price_list().currency
            totals = {
                "invoiced": selected.exclude(state__in=["draft", "void"]).aggregate(s=Sum("total"))["s"] or 0,
                "unpaid": selected.filter(state="issued").aggregate(s=Sum("total"))["s"] or 0,
            }
            response.context_data["title"] = (
                f"Invoices: revenue {units.money(totals['invoiced'], currency)}, "
                f"unpaid {units.money(totals['unpaid'], currency)}"
            )
        return response

    def _apply(self, request, queryset, fn, label):
        for invoice in queryset:
            try:
                fn(invoice=invoice, actor=operator_actor(request.user, invoice.tenant))
            except Conflict as exc:
                self.message_user(request, f"{invoice}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{label} done.")

    @admin.action(description="Issue the selected drafts")
    def issue(self, request, queryset):
        self._apply(request, queryset, invoicing.invoice_issue, "Issue")

    @admin.action(description="Mark the selected invoices paid")
    def mark_paid(self, request, queryset):
        self._apply(request, queryset, invoicing.invoice_mark_paid, "Payment")

    @admin.action(description="Void the selected invoices")
    def void(self, request, queryset):
        self._apply(request, queryset, invoicing.invoice_void, "Void")


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["instance", "tenant", "hour", "running_seconds", "stopped_seconds", "tx_bytes"]
    list_filter = ["hour"]
    search_fields = ["instance__name", "tenant__name"]


admin.site.register(MeterSample, list_display=["instance", "taken_at", "tx_delta", "rx_delta"])
admin.site.register(TrafficNotice, list_display=["instance", "period", "level", "sent_at"])
