"""按时处理率 (on-time rate) and 超时 (overdue) figures per stage, department and implementer.

A task is measured against the contract's response-time tier for its type when it has one (settings
`response_tiers = { demand = 5, problem = 15, severe = 30, unresolved = 240 }` in minutes, seed 001 §七; seed
003's 2 h is `{ support = 120 }`; `task_tiers = { intake = "demand", … }` names each task type's tier), else
against its own working-day deadline (`due_at`). A completed task is on time when it was completed within the
limit; a task still open past its limit is overdue; tasks with no clock are not counted. The rate is
on-time ÷ (completed with a clock + open overdue).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased

from engine.contract import schedule
from engine.contract.calendar import TZ
from engine.trust.policy import IMPLEMENTER
from storage.models import Contract, Department, HumanTask, User, WorkItem

GROUPS = ("department", IMPLEMENTER, "stage")  # per implementer: grouped by the person who did the work


@dataclass
class Tally:
    tasks: int = 0
    on_time: int = 0
    late: int = 0
    open_overdue: int = 0

    @property
    def counted(self) -> int:
        return self.on_time + self.late + self.open_overdue

    @property
    def rate(self) -> float | None:
        return None if self.counted == 0 else round(self.on_time / self.counted, 4)


def limit_of(task: HumanTask, settings: dict[str, Any]) -> datetime | None:
    """The moment the task had to be done by: its tier's minutes after it was created, or its due_at."""
    tiers = settings.get("response_tiers") or {}
    tier = (settings.get("task_tiers") or {}).get(task.spec_name)
    if tier is not None and tier in tiers:
        return task.created_at + timedelta(minutes=float(tiers[tier]))
    return task.due_at


def classify(task: HumanTask, settings: dict[str, Any], now: datetime) -> str | None:
    limit = limit_of(task, settings)
    if limit is None:
        return None
    if task.completed_at is not None:
        return "on_time" if task.completed_at <= limit else "late"
    if task.status in ("ready", "claimed") and now > limit:
        return "open_overdue"
    return None


def on_time_rates(session: Session, contract: Contract, start: date, end: date, by: str,
                  now: datetime) -> list[dict[str, Any]]:
    """The figures of tasks created within [start, end] (Beijing dates) of the contract's items, grouped."""
    if by not in GROUPS:
        raise ValueError(by)
    settings = contract.settings or {}
    lo = datetime.combine(start, time(0), TZ)
    hi = datetime.combine(end + timedelta(days=1), time(0), TZ)
    dept = aliased(Department)
    item_dept = aliased(Department)
    who = aliased(User)
    holder = aliased(User)
    rows = session.execute(
        select(HumanTask, dept.code, item_dept.code, who.username, holder.username)
        .join(WorkItem, WorkItem.id == HumanTask.item_id)
        .join(item_dept, item_dept.id == WorkItem.department_id)
        .outerjoin(dept, dept.id == HumanTask.department_id)
        .outerjoin(who, who.id == HumanTask.completed_by_id)
        .outerjoin(holder, holder.id == HumanTask.assignee_id)
        .where(WorkItem.contract_id == contract.id, HumanTask.created_at >= lo, HumanTask.created_at < hi,
               or_(HumanTask.status != "cancelled", HumanTask.completed_at.is_not(None)))
        .order_by(HumanTask.id)).all()
    stages = schedule.stages(settings, contract.period_start, contract.period_end)
    tallies: dict[str, Tally] = defaultdict(Tally)
    for task, task_dept, item_dept_code, done_by, held_by in rows:
        if by == "department":
            key = task_dept or item_dept_code
        elif by == IMPLEMENTER:
            key = done_by or held_by or "—"
        else:
            day = task.created_at.astimezone(TZ).date()
            stage = schedule.stage_of_day(stages, day)
            key = stage.code if stage else "—"
        t = tallies[key]
        t.tasks += 1
        state = classify(task, settings, now)
        if state == "on_time":
            t.on_time += 1
        elif state == "late":
            t.late += 1
        elif state == "open_overdue":
            t.open_overdue += 1
    return [{"by": by, "key": k, "tasks": t.tasks, "on_time": t.on_time, "late": t.late,
             "open_overdue": t.open_overdue, "overdue": t.late + t.open_overdue, "rate": t.rate}
            for k, t in sorted(tallies.items())]
