"""Tests for the working-day calendar used for deadlines (holidays, 调休 make-up days, admin overrides)."""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import chinese_calendar
import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.contract.calendar import TZ, Deadline, WorkCalendar, fallback_warning

# 2026 around National Day, as printed from chinese_calendar 1.11 (constants.holidays / constants.workdays):
#   holidays  2026-09-25 Fri, 09-26 Sat, 09-27 Sun      Mid-autumn Festival
#             2026-10-01 Thu … 10-07 Wed                National Day
#   make-up   2026-09-20 Sun, 2026-10-10 Sat            National Day 调休 workdays
# From Tue 2026-09-29 (the start day does not count):
#   1 = Wed 09-30, (10-01…10-07 off), 2 = Thu 10-08, 3 = Fri 10-09, 4 = Sat 10-10 (make-up), (Sun 10-11 off),
#   5 = Mon 10-12  → due 2026-10-12 18:00 Asia/Shanghai = 10:00 UTC.


def test_the_package_table_is_what_the_hand_computation_assumed() -> None:
    window = (date(2026, 9, 20), date(2026, 10, 12))
    assert {d for d in chinese_calendar.constants.holidays if window[0] <= d <= window[1]} == {
        date(2026, 9, 25), date(2026, 9, 26), date(2026, 9, 27),
        *(date(2026, 10, day) for day in range(1, 8)),
    }
    assert {d for d in chinese_calendar.constants.workdays if d.year == 2026 and d.month in (9, 10)} == {
        date(2026, 9, 20), date(2026, 10, 10),
    }


@freeze_time("2026-09-29T10:00:00+08:00")
def test_five_working_days_across_national_day_2026() -> None:
    now = datetime.now(TZ)
    assert (now.date(), now.hour, now.strftime("%a")) == (date(2026, 9, 29), 10, "Tue")

    deadline = WorkCalendar().add_working_days(now, 5)

    assert deadline == Deadline(due_at=datetime(2026, 10, 12, 10, 0, tzinfo=UTC), warnings=())
    assert deadline.due_at.astimezone(TZ) == datetime(2026, 10, 12, 18, 0, tzinfo=TZ)
    assert deadline.due_at.tzinfo is UTC


def test_make_up_saturday_is_a_workday() -> None:
    calendar = WorkCalendar()
    assert calendar.is_workday(date(2026, 10, 10)) == (True, None)  # Saturday, 调休
    assert calendar.is_workday(date(2026, 10, 11)) == (False, None)  # ordinary Sunday
    assert calendar.is_workday(date(2026, 10, 5)) == (False, None)  # Monday inside National Day
    # Friday 10-09 + 1 working day is the make-up Saturday, not Monday.
    start = datetime(2026, 10, 9, 9, 0, tzinfo=TZ)
    assert calendar.add_working_days(start, 1).due_at == datetime(2026, 10, 10, 18, 0, tzinfo=TZ)


def test_uncovered_year_falls_back_to_monday_to_friday_with_a_warning() -> None:
    calendar = WorkCalendar()
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(2027, 2, 8))  # the package really has no 2027 data

    assert calendar.is_workday(date(2027, 2, 8)) == (True, "2027 年节假日未录入，按周一至周五计算")
    assert calendar.is_workday(date(2027, 2, 6)) == (False, fallback_warning(2027))

    # Fri 2027-02-05 + 3: Mon 02-08, Tue 02-09, Wed 02-10 (Spring Festival is unknown, so it is ignored).
    deadline = calendar.add_working_days(datetime(2027, 2, 5, 10, 0, tzinfo=TZ), 3)
    assert deadline.due_at == datetime(2027, 2, 10, 18, 0, tzinfo=TZ)
    assert deadline.warnings == ("2027 年节假日未录入，按周一至周五计算",)


def test_span_into_an_uncovered_year_warns_once() -> None:
    # Thu 2026-12-31 (1, package), Fri 2027-01-01 (2, Mon–Fri guess), Mon 01-04 (3).
    deadline = WorkCalendar().add_working_days(datetime(2026, 12, 30, 10, 0, tzinfo=TZ), 3)
    assert deadline.due_at == datetime(2027, 1, 4, 18, 0, tzinfo=TZ)
    assert deadline.warnings == (fallback_warning(2027),)


# What an admin might enter for 2027 (illustrative, not the official schedule).
ADMIN_2027 = {
    **{date(2027, 2, day): False for day in range(8, 13)},  # Mon 02-08 … Fri 02-12 Spring Festival
    date(2027, 2, 20): True,  # Saturday make-up day
}


def test_admin_overrides_for_a_covered_year_decide_without_warning() -> None:
    calendar = WorkCalendar(overrides=ADMIN_2027, covered_years={2027})

    assert calendar.is_workday(date(2027, 2, 8)) == (False, None)
    assert calendar.is_workday(date(2027, 2, 20)) == (True, None)  # make-up Saturday
    assert calendar.is_workday(date(2027, 2, 21)) == (False, None)  # plain Sunday: weekend rule
    assert calendar.is_workday(date(2027, 3, 1)) == (True, None)  # plain Monday

    # Fri 02-05 + 3: 02-06/07 weekend, 02-08…12 holiday, 02-13/14 weekend, Mon 02-15, Tue 02-16, Wed 02-17.
    deadline = calendar.add_working_days(datetime(2027, 2, 5, 10, 0, tzinfo=TZ), 3)
    assert deadline == Deadline(due_at=datetime(2027, 2, 17, 10, 0, tzinfo=UTC), warnings=())

    # Fri 02-19 + 1 lands on the make-up Saturday.
    assert calendar.add_working_days(datetime(2027, 2, 19, 10, 0, tzinfo=TZ), 1).due_at == datetime(
        2027, 2, 20, 18, 0, tzinfo=TZ)


def test_overrides_without_covered_year_still_warn_for_other_days() -> None:
    calendar = WorkCalendar(overrides=ADMIN_2027)
    assert calendar.is_workday(date(2027, 2, 8)) == (False, None)
    assert calendar.is_workday(date(2027, 3, 1)) == (True, fallback_warning(2027))


def test_override_beats_the_package() -> None:
    # Say the State Council moved a day after the package was released.
    calendar = WorkCalendar(overrides={date(2026, 9, 30): False, date(2026, 10, 11): True})
    start = datetime(2026, 9, 29, 10, 0, tzinfo=TZ)
    # 1 = Thu 10-08, 2 = Fri 10-09, 3 = Sat 10-10, 4 = Sun 10-11 (override), 5 = Mon 10-12.
    assert calendar.add_working_days(start, 5).due_at == datetime(2026, 10, 12, 18, 0, tzinfo=TZ)
    assert calendar.add_working_days(start, 4).due_at == datetime(2026, 10, 11, 18, 0, tzinfo=TZ)


def test_start_day_is_taken_in_beijing_time() -> None:
    # 2026-09-29 20:00 UTC is already Wednesday 09-30 04:00 in Beijing, so day 1 is Thu 10-08.
    start = datetime(2026, 9, 29, 20, 0, tzinfo=UTC)
    assert WorkCalendar().add_working_days(start, 1).due_at == datetime(2026, 10, 8, 18, 0, tzinfo=TZ)


def test_end_of_day_and_zero_days() -> None:
    calendar = WorkCalendar()
    start = datetime(2026, 9, 29, 10, 0, tzinfo=TZ)
    assert calendar.add_working_days(start, 1, end_of_day=time(17, 30)).due_at == datetime(
        2026, 9, 30, 17, 30, tzinfo=TZ)
    assert calendar.add_working_days(start, 0).due_at == datetime(2026, 9, 29, 18, 0, tzinfo=TZ)


def test_bad_arguments_are_refused() -> None:
    calendar = WorkCalendar()
    with pytest.raises(ValueError, match="aware"):
        calendar.add_working_days(datetime(2026, 9, 29, 10, 0), 1)
    with pytest.raises(ValueError, match="negative"):
        calendar.add_working_days(datetime(2026, 9, 29, 10, 0, tzinfo=TZ), -1)
    with pytest.raises(ValueError, match="overrides"):
        WorkCalendar(overrides={date(2027, 1, 1) + timedelta(days=i): False for i in range(1200)},
                     covered_years={2027, 2028, 2029, 2030}).add_working_days(
            datetime(2026, 12, 31, 10, 0, tzinfo=TZ), 2)


def test_working_days_between() -> None:
    calendar = WorkCalendar()
    start = datetime(2026, 9, 29, 10, 0, tzinfo=TZ)
    assert calendar.working_days_between(start, datetime(2026, 10, 12, 9, 0, tzinfo=TZ)) == 5
    assert calendar.working_days_between(start, datetime(2026, 10, 7, 23, 0, tzinfo=TZ)) == 1
    assert calendar.working_days_between(start, start) == 0
    assert calendar.working_days_between(datetime(2026, 10, 12, 9, 0, tzinfo=TZ), start) == -5


@settings(max_examples=60, deadline=None)
@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(TZ)),
       st.integers(min_value=0, max_value=40))
def test_between_inverts_add(start: datetime, days: int) -> None:
    calendar = WorkCalendar()
    deadline = calendar.add_working_days(start, days)
    assert calendar.working_days_between(start, deadline.due_at) == days
    assert deadline.due_at.tzinfo is UTC
    if days and calendar.is_workday(deadline.due_at.astimezone(TZ).date())[0] is False:
        pytest.fail("a deadline must fall on a working day")
