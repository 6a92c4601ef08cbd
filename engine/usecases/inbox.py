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
