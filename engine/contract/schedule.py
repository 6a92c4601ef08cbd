"""The contract's settlement schedule: which stages it settles, each stage's period, and the clocks around them.

Declared in the contract settings (`settlement_schedule`), e.g. seed 001 (上海 一网通办):

    settlement_schedule = [
      { stage = "6m", name = "6个月阶段性结算", months = [1, 6] },
      { stage = "9m", name = "9个月阶段性结算", months = [7, 9] },
      { stage = "annual", name = "年度结算", months = [10, 12], builds_on_staged = true },
      { stage = "final", name = "最终结算（绩效评价后）", final = true },
    ]

or the shorthand `"quarterly"` (seed 000: q1…q4 of three months each). Months count from the contract's
`period_start` (month 1 is the month it starts in, day for day). Stage periods follow on from each other and
never overlap; the final stage owns no months of its own (it settles what the evaluation adjusts, and entries
carried into it).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from engine.contract.calendar import TZ, WorkCalendar
from engine.errors import Invalid

QUARTERLY = [
    {"stage": "q1", "name": "第一季度结算", "months": [1, 3]},
    {"stage": "q2", "name": "第二季度结算", "months": [4, 6]},
    {"stage": "q3", "name": "第三季度结算", "months": [7, 9]},
    {"stage": "q4", "name": "第四季度结算", "months": [10, 12]},
]

# Seed 001 §十(三) 3)/4): materials 20 working days after the stage's end, revisions 15 working days after the
# third party's comments, 3 % of the stage's fee when late. §十(三) 2): monthly reports 10 working days.
DEFAULT_DUE_DAYS = 20
DEFAULT_REVISION_DAYS = 15
DEFAULT_MONTHLY_REPORT_DAYS = 10
DEFAULT_RECTIFICATION_DAYS = 20


@dataclass(frozen=True)
class Stage:
    code: str
    name: str
    start: date
    end: date
    position: int
    final: bool = False
    builds_on_staged: bool = False

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end and not self.final


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months, clamped to the month's last day (Jan 31 + 1 month = Feb 28/29)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    for dd in (day.day, 30, 29, 28):
        try:
            return date(year, month, dd)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def raw_schedule(settings: dict[str, Any]) -> list[dict[str, Any]] | None:
    raw = settings.get("settlement_schedule")
    if not raw:
        return None
    if raw == "quarterly":
        return QUARTERLY
    if not isinstance(raw, list):
        raise Invalid("settlement_schedule must be \"quarterly\" or a list of stages", code="bad_contract_settings")
    return raw


def validate_schedule(raw: Any) -> None:
    """Refuse a malformed schedule or one whose stage periods overlap (used when a catalogue is loaded)."""
    if raw in (None, "", "quarterly"):
        return
    if not isinstance(raw, list):
        raise Invalid("settlement_schedule must be \"quarterly\" or a list of stages", code="bad_contract_settings")
    seen: set[str] = set()
    last = 0
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or not s.get("stage") or not s.get("name"):
            raise Invalid(f"settlement_schedule[{i}] needs stage and name", code="bad_contract_settings")
        if s["stage"] in seen:
            raise Invalid(f"settlement_schedule: stage {s['stage']!r} twice", code="bad_contract_settings")
        seen.add(str(s["stage"]))
        if s.get("final"):
            continue
        months = s.get("months")
        if (not isinstance(months, list) or len(months) != 2 or not all(isinstance(m, int) for m in months)
                or months[0] < 1 or months[1] < months[0]):
            raise Invalid(f"settlement_schedule[{i}].months must be [first, last] months ≥ 1",
                          code="bad_contract_settings")
        if months[0] <= last:
            raise Invalid(f"settlement_schedule: stage {s['stage']!r} overlaps the stage before it "
                          f"(months {months} after month {last})", code="schedule_overlap")
        last = months[1]


def stages(settings: dict[str, Any], period_start: date | None, period_end: date | None) -> list[Stage]:
    """The contract's stages with their periods; empty when the contract declares no schedule."""
    raw = raw_schedule(settings)
    if raw is None:
        return []
    if period_start is None:
        raise Invalid("the contract declares a settlement schedule but no period_start", code="bad_contract_settings")
    validate_schedule(raw)
    out: list[Stage] = []
    for i, s in enumerate(raw):
        if s.get("final"):
            end = period_end or add_months(period_start, 12) - timedelta(days=1)
            out.append(Stage(str(s["stage"]), str(s["name"]), period_start, end, i, final=True))
            continue
        first, last = s["months"]
        start = add_months(period_start, first - 1)
        end = add_months(period_start, last) - timedelta(days=1)
        out.append(Stage(str(s["stage"]), str(s["name"]), start, end, i,
                         builds_on_staged=bool(s.get("builds_on_staged"))))
    return out


def stage_named(all_stages: list[Stage], code: str) -> Stage:
    for s in all_stages:
        if s.code == code:
            return s
    raise Invalid(f"the contract's schedule has no stage {code!r}; it has {[s.code for s in all_stages]}",
                  code="unknown_stage", stages=[s.code for s in all_stages])


def stage_of_day(all_stages: list[Stage], day: date) -> Stage | None:
    return next((s for s in all_stages if s.contains(day)), None)


def working_deadline(calendar: WorkCalendar, after: datetime, working_days: int) -> tuple[datetime, list[str]]:
    """The end (23:59:59 Beijing) of the Nth working day after `after`."""
    deadline = calendar.add_working_days(after, working_days, end_of_day=time(23, 59, 59))
    return deadline.due_at, list(deadline.warnings)


def after_day(day: date) -> datetime:
    """A moment inside `day` (Beijing), to count working days from the day's end."""
    return datetime.combine(day, time(12, 0), TZ)


# ---------------------------------------------------------------- grades (seed 001 §十(四) 5))

GRADES: tuple[tuple[Decimal, str], ...] = (
    (Decimal("90"), "优秀"), (Decimal("80"), "良好"), (Decimal("70"), "一般"), (Decimal("60"), "合格"),
)
FAIL_GRADE = "不合格"


def grade_for(score: Decimal | None) -> str | None:
    """优秀 ≥ 90, 良好 80–<90, 一般 70–<80, 合格 60–<70, 不合格 < 60: a score on a boundary takes the higher."""
    if score is None:
        return None
    if not Decimal("0") <= score <= Decimal("100"):
        raise Invalid(f"assessment score {score} is outside 0–100", code="invalid_score")
    for floor, name in GRADES:
        if score >= floor:
            return name
    return FAIL_GRADE
