"""Prices, meter samples, hourly usage, traffic notices, SLA tiers and invoices.

Money is Decimal everywhere. Rates are stored with up to 6 decimal places; amounts are
computed at full precision and each invoice line is rounded once, half up, to the cent
(billing.money.cents); tax is computed on the rounded subtotal and rounded the same way.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from compute.models import Flavor, Instance
from tenants.models import Tenant


class OverPolicy(models.TextChoices):
    BILL = "bill", "Bill the overage"
    THROTTLE = "throttle", "Throttle the interface"


class StoppedPolicy(models.TextChoices):
    DISK = "disk", "Disk only"
    FULL = "full", "Full price (capacity stays reserved)"


class PriceList(models.Model):
    """The operator's catalogue-wide prices; one row (the first) is in force."""

    currency = models.CharField(max_length=3, default="EUR")
    vcpu_hour = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0.008"))
    ram_gb_hour = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0.004"))
    disk_gb_month = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0.05"))
    # Custom sizes: cap a month's running charge at this many hours of the hourly price.
    custom_cap_hours = models.PositiveIntegerField(default=672)
    custom_overage_gb = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0.01"))
    custom_over_policy = models.CharField(max_length=8, choices=OverPolicy.choices, default=OverPolicy.BILL)
    throttle_mbit = models.PositiveIntegerField(default=1, help_text="Rate of a throttled interface")
    minimum_seconds = models.PositiveIntegerField(default=60, help_text="Shortest running time billed")
    grace_days = models.PositiveIntegerField(default=14, help_text="Days after the due date before suspension")
    payment_days = models.PositiveIntegerField(default=14, help_text="Days from issue to due date")

    def __str__(self) -> str:
        return f"price list ({self.currency})"


class FlavorPrice(models.Model):
    flavor = models.OneToOneField(Flavor, on_delete=models.CASCADE, related_name="price")
    hourly = models.DecimalField(max_digits=12, decimal_places=6)
    monthly_cap = models.DecimalField(max_digits=12, decimal_places=2)
    stopped_policy = models.CharField(max_length=8, choices=StoppedPolicy.choices, default=StoppedPolicy.DISK)
    overage_gb = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0.01"))
    over_policy = models.CharField(max_length=8, choices=OverPolicy.choices, default=OverPolicy.BILL)

    def __str__(self) -> str:
        return f"{self.flavor} {self.hourly}/h, cap {self.monthly_cap}"


class BillingAccount(models.Model):
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="billing")
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=Decimal("0"), help_text="0.19 = 19%")

    def __str__(self) -> str:
        return f"billing of {self.tenant_id}"


class SlaTier(models.Model):
    """For instances sold with `sla_percent`, availability below `below` earns `credit_percent`."""

    sla_percent = models.DecimalField(max_digits=6, decimal_places=3)
    below = models.DecimalField(max_digits=6, decimal_places=3)
    credit_percent = models.DecimalField(max_digits=5, decimal_places=2)

    class Meta:
        ordering = ["sla_percent", "-below"]
        constraints = [models.UniqueConstraint(fields=["sla_percent", "below"], name="sla_tier_unique")]

    def __str__(self) -> str:
        return f"SLA {self.sla_percent}: below {self.below}% -> {self.credit_percent}% credit"


class MeterSample(models.Model):
    """Counters of one instance at one moment, and what they grew by since the last sample."""

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="meter_samples")
    taken_at = models.DateTimeField()
    cpu_time_ns = models.PositiveBigIntegerField()
    rx_bytes = models.PositiveBigIntegerField()
    tx_bytes = models.PositiveBigIntegerField()
    disk_bytes = models.PositiveBigIntegerField()
    # Growth since the previous sample: never negative; after a counter reset, the new value.
    cpu_ns_delta = models.PositiveBigIntegerField()
    rx_delta = models.PositiveBigIntegerField()
    tx_delta = models.PositiveBigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "taken_at"], name="sample_unique")]
        indexes = [models.Index(fields=["taken_at"])]

    def __str__(self) -> str:
        return f"{self.instance_id} at {self.taken_at:%Y-%m-%d %H:%M:%S}"


class UsageRecord(models.Model):
    """One instance's use in one hour, recomputed idempotently from state log and samples."""

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="usage_records")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_records")
    hour = models.DateTimeField()
    running_seconds = models.PositiveIntegerField(default=0)
    billable_running_seconds = models.PositiveIntegerField(default=0)
    stopped_seconds = models.PositiveIntegerField(default=0)
    rx_bytes = models.PositiveBigIntegerField(default=0)
    tx_bytes = models.PositiveBigIntegerField(default=0)
    cpu_seconds = models.DecimalField(max_digits=14, decimal_places=3, default=Decimal("0"))
    # The sizes it ran at in this hour: [{"flavor", "vcpus", "memory_mb", "disk_gb",
    # "running", "billable", "stopped"}], seconds per size (a resize splits an hour).
    segments = models.JSONField(default=list)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "hour"], name="usage_unique_hour")]
        indexes = [models.Index(fields=["tenant", "hour"])]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.hour:%Y-%m-%d %H}:00"


class AggregatedHour(models.Model):
    """When an hour's UsageRecords (of every instance) were last computed. Once that happened
    after the hour had settled (billing.usage.settled), the records are final and the monthly
    run reads them instead of computing the hour again."""

    hour = models.DateTimeField(primary_key=True)
    aggregated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 at {self.aggregated_at:%Y-%m-%d %H:%M:%S}"


class TrafficNotice(models.Model):
    """An allowance e-mail sent (80 or 100 percent), once per instance and month."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="traffic_notices")
    period = models.DateField()
    level = models.PositiveSmallIntegerField()
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "period", "level"], name="notice_once")]

    def __str__(self) -> str:
        return f"{self.instance_id} {self.period:%Y-%m} {self.level}%"


class Invoice(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        ISSUED = "issued", "Issued"
        PAID = "paid", "Paid"
        VOID = "void", "Void"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="invoices")
    period = models.DateField(help_text="First day of the month billed")
    number = models.CharField(max_length=32, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.DRAFT)
    currency = models.CharField(max_length=3)
    subtotal = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=Decimal("0"))
    tax = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    total = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now)
    issued_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period", "tenant_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period"], condition=~Q(state="void"), name="invoice_one_per_month"
            ),
            models.UniqueConstraint(fields=["number"], condition=~Q(number=""), name="invoice_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.number or self.id} ({self.period:%Y-%m})"


class InvoiceCounter(models.Model):
    """The last invoice number used in a month; its row lock orders the numbers."""

    period = models.DateField(primary_key=True)
    last = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.period:%Y-%m}: {self.last}"


class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        RUNNING = "running", "Running time"
        STOPPED = "stopped", "Stopped (disk)"
        CUSTOM = "custom", "Custom size units"
        OVERAGE = "overage", "Traffic over allowance"
        SLA_CREDIT = "sla_credit", "SLA credit"
        # Credits larger than a month's charges: the rest goes to the next invoice, so an
        # invoice never has a negative total and tax is only ever charged on net charges.
        CARRIED_OUT = "carried_out", "Credit carried to the next invoice"
        CARRIED_IN = "carried_in", "Credit from the last invoice"

    id = models.BigAutoField(primary_key=True)
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=16, decimal_places=6)
    unit = models.CharField(max_length=16)
    unit_price = models.DecimalField(max_digits=14, decimal_places=6)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount}"
