"""Work that waits for a role outside the item tasks: settlement steps (BPMN-driven, one per claim), with due dates.

Settlement claims run on the `settlement` model but are not work items, so their steps are never projected into
`human_tasks` (which belong to an item): the inbox asks for them here, by the role that must act."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.usecases.settlement import STATUS_NAMES, allowed_actions
from engine.usecases.tasks import work_calendar
from storage.models import Settlement, User

# Seed 001 §(五): the supplier revises within 15 working days of the third party's comments.
REVISION_WORKING_DAYS = 15
STEP_TITLES = {"prepare_claim": "编制并提交结算申报", "audit_review": "第三方审核申报材料",
               "first_review": "采购单位初审", "final_approval": "采购单位审定"}


@dataclass(frozen=True)
class SettlementStep:
    settlement_id: int
    label: str
    contract: str
    step: str
    title: str
    status: str
    round: int
    waiting_since: datetime
    due_at: datetime | None
    revision: bool


def settlement_steps(session: Session, user: User) -> list[SettlementStep]:
    """The settlement steps this user may act on now, earliest due first. The step's lane in the settlement
    model (kept on the claim as `current_lane`) names the role that acts."""
    rows = session.scalars(select(Settlement).where(Settlement.current_lane == user.role,
                                                    Settlement.status != "approved").order_by(Settlement.id))
    calendar = None
    out: list[SettlementStep] = []
    for s in rows:
        if not allowed_actions(user, s):  # e.g. the buyer who did the first review cannot also approve it
            continue
        since = s.updated_at or s.created_at
        if since.tzinfo is None:  # SQLite hands back naive UTC
            since = since.replace(tzinfo=UTC)
        revision = s.current_task == "prepare_claim" and (s.round or 1) > 1
        due: datetime | None = None
        if s.current_task == "prepare_claim":
            if revision:
                calendar = calendar or work_calendar(session)
                due = calendar.add_working_days(since, REVISION_WORKING_DAYS).due_at
            else:
                due = s.due_at
        else:
            days = ((s.contract.settings or {}).get("due_days") or {}).get(s.current_task or "")
            if days:
                calendar = calendar or work_calendar(session)
                due = calendar.add_working_days(since, int(days)).due_at
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        title = "修改结算申报" if revision else STEP_TITLES.get(s.current_task or "", s.current_task or "")
        out.append(SettlementStep(s.id, s.label, s.contract.code, s.current_task or "", title,
                                  STATUS_NAMES.get(s.status, s.status), s.round or 1, since, due, revision))
    out.sort(key=lambda st: (st.due_at is None, st.due_at.timestamp() if st.due_at else 0, st.settlement_id))
    return out


@dataclass(frozen=True)
class ReportStep:
    """A monthly operations report (engine/usecases/monthly_report.py) that waits for someone: to be
    written and submitted
    or revised (PM), or reviewed (the third party)."""

    report_id: int | None
    contract: str
    month: str
    step: str  # write | revise | review
    title: str
    due_at: datetime | None


def report_steps(session: Session, user: User, now: datetime | None = None) -> list[ReportStep]:
    """Months that have ended without an accepted report, for the role whose move it is; read only (the rows of
    months nobody has opened yet are computed as `open`, with the deadline ensure_reports would give them)."""
    from engine.contract import schedule
    from engine.contract.calendar import TZ
    from engine.trust.policy import may
    from engine.usecases import monthly_report as mr
    from storage.models import Contract, ContractTask

    prepare, review = may(user, "report.prepare"), may(user, "report.review")
    if not (prepare or review):
        return []
    today = (now or datetime.now(UTC)).astimezone(TZ).date()
    calendar = None
    out: list[ReportStep] = []
    for contract in session.scalars(select(Contract).order_by(Contract.code)):
        days = (contract.settings or {}).get("monthly_report_working_days")
        if days is None:
            continue
        rows = {t.key: t for t in session.scalars(select(ContractTask).where(
            ContractTask.contract_id == contract.id, ContractTask.kind == mr.KIND))}
        for key, _start, end in mr.months_of(contract):
            if end >= today:
                continue  # the month is not over
            row = rows.get(key)
            status = row.status if row is not None else "open"
            if prepare and status in ("open", "returned"):
                if row is not None:
                    due = row.revision_due_at if status == "returned" else row.due_at
                else:
                    calendar = calendar or work_calendar(session)
                    due = schedule.working_deadline(calendar, schedule.after_day(end), int(days))[0]
                out.append(ReportStep(row.id if row else None, contract.code, key,
                                      "write" if status == "open" else "revise",
                                      "编写并提交月度运营报告" if status == "open" else "修改月度运营报告", due))
            if review and status == "submitted" and row is not None:
                out.append(ReportStep(row.id, contract.code, key, "review", "审核月度运营报告", None))
    return out
