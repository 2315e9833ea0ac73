"""The one rounding rule: amounts are exact Decimals until a line is final, then rounded once,
half up, to the cent. No float is ever used for money."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0")
GIB = 1024**3


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)
