"""Working-day calendar (工作日) for deadlines: Chinese public holidays, make-up workdays, admin overrides."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

__all__ = ["TZ", "Deadline", "WorkCalendar", "fallback_warning"]

TZ = ZoneInfo("Asia/Shanghai")

# A run of non-working days longer than this means the overrides are broken (e.g. a whole year marked as
# holiday), not that the deadline is far away; fail instead of scanning forever.
_MAX_SCAN_DAYS = 3 * 366


def fallback_warning(year: int) -> str:
    """The message shown when a year's holidays are known neither to the package nor to an admin."""
    return f"{year} 年节假日未录入，按周一至周五计算"


@dataclass(frozen=True)
class Deadline:
    """When something is due (aware, UTC) and why the date may be unreliable."""

    due_at: datetime
    warnings: tuple[str, ...] = ()


class WorkCalendar:
    """Decides working days: admin overrides first, then the admin's fully-entered years, then the package."""

    def __init__(self, overrides: Mapping[date, bool] | None = None, covered_years: Iterable[int] = ()):
        # overrides: date -> True (workday, e.g. 调休 make-up day) / False (holiday). covered_years: years an
        # admin entered completely, so weekends + overrides decide and the package is not consulted.
        self._overrides = dict(overrides or {})
        self._covered_years = frozenset(covered_years)

    def is_workday(self, d: date) -> tuple[bool, str | None]:
        """(is it a working day, warning) — the warning is set when only the Monday–Friday rule applied."""
        if isinstance(d, datetime):
            # A datetime is a date subclass (and unequal to any date key); take its Beijing calendar day.
            d = _local_date(d) if d.tzinfo is not None else d.date()
        if d in self._overrides:
            return self._overrides[d], None
        weekday_rule = d.weekday() < 5
        if d.year in self._covered_years:
            return weekday_rule, None
        try:
            return bool(chinese_calendar.is_workday(d)), None
        except NotImplementedError:
            # chinese_calendar raises this for years it has no data for (it covers 2004 to its release year).
            return weekday_rule, fallback_warning(d.year)

    def add_working_days(self, start: datetime, days: int, end_of_day: time = time(18, 0)) -> Deadline:
        """End of the Nth working day after `start`'s local date (the start day itself does not count).

        days=0 means the end of the start day itself. The result is aware and in UTC.
        """
        if days < 0:
            raise ValueError("days must not be negative")
        day = _local_date(start)
        warnings: list[str] = []
        remaining, scanned = days, 0
        while remaining > 0:
            day += timedelta(days=1)
            scanned += 1
            is_work, warning = self.is_workday(day)
            if warning and warning not in warnings:
                warnings.append(warning)
            if is_work:
                remaining -= 1
                scanned = 0
            elif scanned > _MAX_SCAN_DAYS:
                raise ValueError(f"no working day in {_MAX_SCAN_DAYS} days up to {day}; check the overrides")
        local_due = datetime.combine(day, end_of_day.replace(tzinfo=None), tzinfo=TZ)
        return Deadline(due_at=local_due.astimezone(UTC), warnings=tuple(warnings))

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days d with start's local date < d <= end's local date; negative when end is before start.

        It is the inverse of add_working_days: working_days_between(s, add_working_days(s, n).due_at) == n.
        """
        first, last = _local_date(start), _local_date(end)
        if last < first:
            return -self.working_days_between(end, start)
        count = 0
        day = first
        while day < last:
            day += timedelta(days=1)
            if self.is_workday(day)[0]:
                count += 1
        return count


def _local_date(moment: datetime) -> date:
    # Deadlines count Beijing calendar days; a naive time has no defined place, so it is refused.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(TZ).date()
