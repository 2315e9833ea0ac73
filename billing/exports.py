"""Invoices as CSV and PDF. The PDF is made with fpdf2 in a CJK font, so names and labels in
any language show as written."""

from __future__ import annotations

import csv
import io
import logging
from decimal import Decimal
from pathlib import Path

from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from fpdf import FPDF

from base import units
from billing.models import Invoice

# CSV holds plain numbers a spreadsheet reads (no currency, no thousands separator): amounts to
# the cent, unit prices to 4 decimals, as the pages and the PDF round them.
CSV_CENT = Decimal("0.01")
CSV_RATE = Decimal("0.0001")


def _plain(value: Decimal, step: Decimal) -> str:
    return f"{Decimal(value).quantize(step):f}"


def _quantity(value: Decimal) -> str:
    return f"{Decimal(value).normalize():f}"


CSV_FIELDS = ["invoice", "period", "kind", "description", "quantity", "unit", "unit_price", "amount", "currency"]


def invoice_csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for line in invoice.lines.all():
        writer.writerow(
            [
                invoice.number or invoice.pk,
                f"{invoice.period:%Y-%m}",
                line.kind,
                _csv_safe(line.description),
                _quantity(line.quantity),
                line.unit,
                _plain(line.unit_price, CSV_RATE),
                _plain(line.amount, CSV_CENT),
                invoice.currency,
            ]
        )
    for label, amount in (("subtotal", invoice.subtotal), ("tax", invoice.tax), ("total", invoice.total)):
        writer.writerow(
            [
                invoice.number or invoice.pk,
                f"{invoice.period:%Y-%m}",
                label,
                "",
                "",
                "",
                "",
                _plain(amount, CSV_CENT),
                invoice.currency,
            ]
        )
    return out.getvalue()


def _csv_safe(text: str) -> str:
    # A cell starting with = + - @, tab or carriage return (OWASP's list) may be read as a
    # formula by spreadsheets; instance names are user text.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# A CJK TrueType font from a Debian package (fonts-wqy-microhei, in system-deps.sh): Chinese
# tenant names and labels need glyphs that PDF's standard fonts do not have.
PDF_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
PDF_ROWS_PER_PAGE = 60
# fontTools logs every glyph of the font subset at INFO.
logging.getLogger("fontTools").setLevel(logging.WARNING)


def _state(invoice: Invoice) -> str:
    # The choice labels are translated in the portal's catalogue, context "status"
    # (portal.templatetags.portal_ui.STATUS_LABELS).
    return pgettext("status", invoice.get_state_display())


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a text-only A4 PDF, labels in the active language (the requester's)."""
    currency = invoice.currency
    rows = [
        (16, _("Invoice %(number)s") % {"number": invoice.number or invoice.pk}),
        (
            10,
            _("Tenant: %(tenant)s    Period: %(period)s    State: %(state)s")
            % {"tenant": invoice.tenant.name, "period": units.month(invoice.period), "state": _state(invoice)},
        ),
        (
            10,
            _("Issued: %(issued)s    Due: %(due)s")
            % {"issued": units.day(invoice.issued_at), "due": units.day(invoice.due_at)},
        ),
        (10, ""),
    ]
    for line in invoice.lines.all():
        rows.append((9, f"{line.description[:90]}"))
        rows.append(
            (
                9,
                f"      {_quantity(line.quantity)} {line.unit} x {units.rate(line.unit_price, currency)}"
                f" = {units.money(line.amount, currency)}",
            )
        )
    rows += [
        (10, ""),
        (10, _("Subtotal: %(amount)s") % {"amount": units.money(invoice.subtotal, currency)}),
        (
            10,
            _("Tax (%(rate)s %%): %(amount)s")
            % {"rate": units.percent(invoice.tax_rate * 100), "amount": units.money(invoice.tax, currency)},
        ),
        (12, _("Total: %(amount)s") % {"amount": units.money(invoice.total, currency)}),
    ]
    pdf = FPDF(format="A4", unit="pt")
    pdf.set_auto_page_break(False)
    pdf.set_title(rows[0][1])
    pdf.add_font("cjk", fname=str(PDF_FONT))
    for first in range(0, len(rows), PDF_ROWS_PER_PAGE):
        pdf.add_page()
        y = 42.0
        for size, text in rows[first : first + PDF_ROWS_PER_PAGE]:
            pdf.set_font("cjk", size=size)
            # Line breaks in user text would start a new text line: one row stays one line.
            pdf.text(50, y, " ".join(text.split()) if text.strip() else "")
            y += size + 4
    return bytes(pdf.output())
