"""Numbers for people, one way everywhere: pages, e-mails, CSV and PDF exports.

Plain functions that pages (as the template filters of portal.templatetags.units), mails and
exports all use. Rules:
- dates as 2026-03-14, moments as 2026-03-14 09:05 UTC (in TIME_ZONE, zone named); in
  Chinese as Chinese portals and Django's zh_Hans formats write them: 2026年3月14日,
  2026年3月14日 09:05 UTC, periods as 2026年3月;
- numbers grouped and pointed by the active locale (formats.number_format); unit words
  (GiB, MiB) and currency codes stay as they are in every language;
- sizes in binary units: bytes as B/KiB/MiB/GiB/TiB, memory from MiB ("512 MiB", "1.5 GiB");
- amounts of money to the cent, with the currency after; a positive amount under a cent is
  "< 0.01 EUR", never "0.00 EUR"; rates (per hour, per GiB) keep up to 4 decimals.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.utils import dateformat, formats, numberformat, timezone
from django.utils.translation import get_language
from django.utils.translation import gettext as _

NONE = "—"
CENT = Decimal("0.01")
RATE = Decimal("0.0001")
DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i T"
DATETIME_SECONDS_FORMAT = "Y-m-d H:i:s T"
MONTH_FORMAT = "F Y"
# (date, moment, moment with seconds, billing period) by language; English is the default.
DATE_FORMATS = {
    "zh-hans": ("Y年n月j日", "Y年n月j日 H:i T", "Y年n月j日 H:i:s T", "Y年n月"),
}


def _date_formats() -> tuple[str, str, str, str]:
    english = (DATE_FORMAT, DATETIME_FORMAT, DATETIME_SECONDS_FORMAT, MONTH_FORMAT)
    return DATE_FORMATS.get((get_language() or "").lower(), english)


def _grouped(amount: Decimal, decimals: int) -> str:
    # The locale's separators, in groups of three everywhere: Django's zh_Hans groups by four
    # (1234,5678), but Chinese cloud consoles and invoices write 12,345,678.00.
    return numberformat.format(
        amount,
        formats.get_format("DECIMAL_SEPARATOR"),
        decimal_pos=decimals,
        grouping=3,
        thousand_sep=formats.get_format("THOUSAND_SEPARATOR") or ",",
        force_grouping=True,
    )


BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None


def _trim(number: Decimal) -> str:
    """1.50 -> 1.5, 2.0 -> 2 (for sizes)."""
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value, currency: str = "") -> str:
    """An amount: 1,234.50 EUR; < 0.01 EUR for a positive amount under a cent."""
    amount = _decimal(value)
    if amount is None:
        return NONE
    text = f"< {_grouped(CENT, 2)}" if 0 < amount < CENT else _grouped(amount.quantize(CENT, rounding=ROUND_HALF_UP), 2)
    return f"{text} {currency}".strip()


def rate(value, currency: str = "") -> str:
    """A unit price (per hour, per GiB): at least 2 and at most 4 decimals, 0.0055 EUR."""
    amount = _decimal(value)
    if amount is None:
        return NONE
    amount = amount.quantize(RATE, rounding=ROUND_HALF_UP)
    decimals = max(2, len(f"{amount:f}".partition(".")[2].rstrip("0")))
    return f"{_grouped(amount, decimals)} {currency}".strip()


def filesize(value) -> str:
    """Bytes in binary units: 0 B, 512 B, 2.5 KiB, 1000 GiB."""
    amount = _decimal(value)
    if amount is None:
        return NONE
    unit = 0
    while abs(amount) >= 1024 and unit < len(BINARY_UNITS) - 1:
        amount /= 1024
        unit += 1
    shown = amount.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP) if unit else amount.quantize(Decimal(1))
    return f"{_trim(shown)} {BINARY_UNITS[unit]}"


def mib(value) -> str:
    """Memory given in MiB: 512 MiB, 2 GiB, 1.5 GiB."""
    amount = _decimal(value)
    if amount is None:
        return NONE
    if abs(amount) >= 1024:
        return f"{_trim((amount / 1024).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP))} GiB"
    return f"{_trim(amount)} MiB"


def gib(value) -> str:
    """A size given in GiB (disks, traffic allowances): 10 GiB, 1000 GiB."""
    amount = _decimal(value)
    return NONE if amount is None else f"{_trim(amount)} GiB"


def mib_of(used, limit) -> str:
    """Memory used against a limit, in the limit's unit: "1 of 40 GiB", "256 of 512 MiB"."""
    used_amount, limit_amount = _decimal(used), _decimal(limit)
    if used_amount is None or limit_amount is None:
        return NONE
    if limit_amount >= 1024:
        shown = (used_amount / 1024).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        return _("%(used)s of %(limit)s") % {"used": _trim(shown), "limit": mib(limit_amount)}
    return _("%(used)s of %(limit)s") % {"used": _trim(used_amount), "limit": mib(limit_amount)}


def day(value) -> str:
    """A date (or the date of a moment, in TIME_ZONE): 2026-03-14."""
    if not value:
        return NONE
    if isinstance(value, datetime):
        value = timezone.localtime(value) if timezone.is_aware(value) else value
    return dateformat.format(value, _date_formats()[0])


def moment(value, precision: str = "") -> str:
    """A moment in TIME_ZONE, its zone named: 2026-03-14 09:05 UTC (with "s": 09:05:07 UTC)."""
    if not value:
        return NONE
    if isinstance(value, datetime):
        value = timezone.localtime(value) if timezone.is_aware(value) else value
    elif isinstance(value, date):
        return day(value)
    _, minutes, seconds, _ = _date_formats()
    return dateformat.format(value, seconds if precision == "s" else minutes)


def month(value) -> str:
    """A billing period: March 2026."""
    return dateformat.format(value, _date_formats()[3]) if value else NONE


def percent(value) -> str:
    """An SLA or a share without trailing zeros: 99.900 -> 99.9."""
    amount = _decimal(value)
    if amount is None:
        return NONE
    return format(amount.normalize(), "f")
