"""Billing periods: a month is its first day; its bounds are UTC midnights."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta


def month_bounds(period: date) -> tuple[datetime, datetime]:
    start = datetime(period.year, period.month, 1, tzinfo=UTC)
    days = calendar.monthrange(period.year, period.month)[1]
    return start, start + timedelta(days=days)


def previous_month(period: date) -> date:
    return (period.replace(day=1) - timedelta(days=1)).replace(day=1)
