"""Invoices as CSV and PDF. The PDF is written directly (text only, standard Helvetica), so
no rendering library is needed; every string placed in it is escaped."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from billing.models import Invoice
from portal.templatetags import units

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


def _pdf_text(text: str) -> str:
    latin = text.encode("latin-1", "replace").decode("latin-1")
    return latin.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").replace("\r", " ").replace("\n", " ")


def invoice_pdf(invoice: Invoice) -> bytes:
    rows = [
        (16, f"Invoice {invoice.number or invoice.pk}"),
        (10, f"Tenant: {invoice.tenant.name}    Period: {units.month(invoice.period)}    State: {invoice.state}"),
        (10, f"Issued: {units.day(invoice.issued_at)}    Due: {units.day(invoice.due_at)}"),
        (10, ""),
    ]
    for line in invoice.lines.all():
        rows.append((9, f"{line.description[:90]}"))
        rows.append(
            (
                9,
                f"      {_quantity(line.quantity)} {line.unit} x {units.rate(line.unit_price, invoice.currency)}"
                f" = {units.money(line.amount, invoice.currency)}",
            )
        )
    rows += [
        (10, ""),
        (10, f"Subtotal: {units.money(invoice.subtotal, invoice.currency)}"),
        (10, f"Tax ({units.percent(invoice.tax_rate * 100)} %): {units.money(invoice.tax, invoice.currency)}"),
        (12, f"Total: {units.money(invoice.total, invoice.currency)}"),
    ]
    pages = [rows[i : i + 60] for i in range(0, len(rows), 60)] or [[]]
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]  # 2: pages, filled below
    font_id = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    page_ids = []
    for page_rows in pages:
        y, parts = 800, []
        for size, text in page_rows:
            parts.append(f"BT /F1 {size} Tf 50 {y} Td ({_pdf_text(text)}) Tj ET")
            y -= size + 4
        stream = "\n".join(parts).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 %d 0 R >> >> "
            b"/Contents %d 0 R >>" % (font_id, content_id)
        )
        page_ids.append(len(objects))
    kids = " ".join(f"{i} 0 R" for i in page_ids).encode()
    objects[1] = b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(page_ids)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()
