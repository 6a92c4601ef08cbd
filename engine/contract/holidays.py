"""Admin-maintained holiday calendar: a year's public holidays and make-up workdays (调休) entered by hand."""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import chinese_calendar
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.trust import audit
from engine.trust.access import authorize
from storage.models import CalendarDay, CalendarYear, User

MIN_YEAR, MAX_YEAR = 2000, 2100


def _year(year: int) -> int:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise Invalid(f"year must be between {MIN_YEAR} and {MAX_YEAR}", code="invalid_form",
                      errors={"year": ["out of range"]})
    return year


def package_covers(year: int) -> bool:
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


def enter_year(session: Session, actor: audit.Actor, user: User, year: int,
               holidays: list[dict[str, Any]], workdays: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace the year's entries: listed holidays are days off, listed workdays are make-up working days;
    every other day follows Monday–Friday. The year then counts as covered (no fallback warning)."""
    authorize(user, "catalog.manage")
    _year(year)
    errors: dict[str, list[str]] = {}
    days: dict[date, tuple[bool, str | None]] = {}
    for field, entries, is_workday in (("holidays", holidays, False), ("workdays", workdays, True)):
        for index, entry in enumerate(entries):
            day, note = entry["date"], entry.get("note")
            if day.year != year:
                errors.setdefault(f"{field}.{index}", []).append(f"{day} is not in {year}")
            elif day in days:
                errors.setdefault(f"{field}.{index}", []).append(f"{day} is listed twice")
            elif is_workday and day.weekday() < 5:
                errors.setdefault(f"{field}.{index}", []).append(f"{day} is a weekday; a make-up workday "
                                                                  "is a Saturday or Sunday")
            days[day] = (is_workday, note)
    if errors:
        raise Invalid("the calendar has errors", code="invalid_form", errors=errors)
    session.execute(delete(CalendarDay).where(CalendarDay.day >= date(year, 1, 1),
                                              CalendarDay.day <= date(year, 12, 31)))
    for day, (is_workday, note) in sorted(days.items()):
        session.add(CalendarDay(day=day, is_workday=is_workday, note=(note or None) and str(note)[:100]))
    marker = session.get(CalendarYear, year)
    if marker is None:
        marker = CalendarYear(year=year)
        session.add(marker)
    marker.entered_by_id = user.id
    # The stamp changes on every entry: the process-wide calendar cache (workflow.work_calendar) keys on it.
    marker.entered_at = datetime.now(UTC)
    session.flush()
    audit.record(session, actor, "calendar.entered", target_type="calendar", target_id=year,
                 holidays=len(holidays), workdays=len(workdays))
    return year_view(session, year)


def year_view(session: Session, year: int) -> dict[str, Any]:
    _year(year)
    rows = list(session.scalars(select(CalendarDay).where(CalendarDay.day >= date(year, 1, 1),
                                                          CalendarDay.day <= date(year, 12, 31))
                                .order_by(CalendarDay.day)))
    entered = session.get(CalendarYear, year)
    covered_by_package = package_covers(year)
    source = "admin" if entered is not None else ("package" if covered_by_package else "none")
    return {
        "year": year, "source": source, "package_covers": covered_by_package,
        "entered_at": entered.entered_at.isoformat() if entered else None,
        "holidays": [{"date": r.day.isoformat(), "note": r.note} for r in rows if not r.is_workday],
        "workdays": [{"date": r.day.isoformat(), "note": r.note} for r in rows if r.is_workday],
        "warning": None if source != "none" else f"{year} 年节假日未录入，按周一至周五计算",
    }


def calendar_years(session: Session, today: date | None = None) -> list[dict[str, Any]]:
    """The years around now and every entered one: covered by the package, entered by an admin, or not covered
    (with the warning the admin sees until it is)."""
    today = today or datetime.now(UTC).date()
    entered = {row.year: row for row in session.scalars(select(CalendarYear))}
    years = sorted(set(range(today.year - 1, min(today.year + 2, MAX_YEAR) + 1)) | set(entered))
    out = []
    for year in years:
        row = entered.get(year)
        source = "admin" if row is not None else ("package" if package_covers(year) else "none")
        out.append({"year": year, "source": source,
                    "entered_at": row.entered_at.isoformat() if row is not None else None,
                    "warning": None if source != "none" else f"{year} 年节假日未录入，按周一至周五计算"})
    return out
