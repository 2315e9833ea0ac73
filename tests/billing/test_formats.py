"""Numbers one way everywhere: the units filters, and the CSV and PDF of an invoice use them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from base import units
from billing import exports
from billing.models import Invoice, InvoiceLine
from tests.billing.conftest import pdf_pages


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("0.004"), "< 0.01 EUR"),
        (Decimal("0"), "0.00 EUR"),
        (Decimal("15.6900000000000"), "15.69 EUR"),  # what SQLite's SUM gives
        (Decimal("1234.5"), "1,234.50 EUR"),
        (Decimal("-3.10"), "-3.10 EUR"),
    ],
)
def test_it_shows_amounts_to_the_cent_and_tiny_ones_as_under_a_cent(value, shown):
    assert units.money(value, "EUR") == shown


def test_it_shows_sizes_in_binary_units_and_dates_one_way():
    assert units.filesize(2560) == "2.5 KiB"
    assert units.filesize(1000 * 1024**3) == "1000 GiB"
    assert units.mib(1536) == "1.5 GiB" and units.mib(512) == "512 MiB"
    assert units.mib_of(1024, 40960) == "1 of 40 GiB"
    assert units.rate(Decimal("0.005479"), "EUR") == "0.0055 EUR"
    assert units.day(date(2026, 3, 4)) == "2026-03-04"
    assert units.moment(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)) == "2026-03-04 05:06 UTC"
    assert units.moment(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC), "s") == "2026-03-04 05:06:07 UTC"


@pytest.mark.django_db
def test_it_exports_invoices_with_the_same_rounding(tenant_a):
    invoice = Invoice.objects.create(
        tenant=tenant_a, period=date(2026, 3, 1), currency="EUR", subtotal=Decimal("0.00"), total=Decimal("0.00")
    )
    InvoiceLine.objects.create(
        invoice=invoice,
        kind=InvoiceLine.Kind.RUNNING,
        description="web-1 running",
        quantity=Decimal("0.250000"),
        unit="hour",
        unit_price=Decimal("0.009500"),
        amount=Decimal("0.00"),
    )

    csv_text = exports.invoice_csv(invoice)
    pdf = "\n".join(pdf_pages(exports.invoice_pdf(invoice)))

    assert ",0.25,hour,0.0095,0.00,EUR" in csv_text
    assert "Period: March 2026" in pdf and "0.25 hour x 0.0095 EUR = 0.00 EUR" in pdf
