"""The third party's difficulty confirmations waiting in its lane, with what it needs to judge them in bulk."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.catalog import item_kinds
from engine.usecases.lists import task_query
from storage.models import Artefact, Contract, Department, HumanTask, ServiceLine, User, WorkItem

REVIEW_FORM = "difficulty_review"
# The evidence a proposal rests on when the line's difficulty gate names none (seed 001: 复杂度说明).
STATEMENT_KIND = "complexity_statement"
MAX_ROWS = 200


@dataclass
class PendingReview:
    """One open confirmation: the task, its item, the PM's proposal and the statement that justifies it."""

    task: HumanTask
    item: WorkItem
    proposed: Decimal
    meaning: str
    proposer: str | None
    note: str | None
    statements: list[Artefact] = field(default_factory=list)


def pending_reviews(session: Session, user: User, *, contract: str = "", line: str = "", department: str = "",
                    q: str = "") -> list[PendingReview]:
    """The difficulty confirmations in the user's queue (free, or held by the user), oldest first, narrowed by
    contract, service line, department and text in the item's code or name."""
    query = (task_query(user, "group").where(HumanTask.form == REVIEW_FORM)
             .join(WorkItem, HumanTask.item_id == WorkItem.id))
    if contract:
        query = query.join(Contract, WorkItem.contract_id == Contract.id).where(Contract.code == contract)
    if line:
        query = query.join(ServiceLine, WorkItem.service_line_id == ServiceLine.id).where(ServiceLine.code == line)
    if department:
        query = query.join(Department, WorkItem.department_id == Department.id).where(Department.code == department)
    if q:
        like = f"%{q}%"
        query = query.where(WorkItem.code.like(like) | WorkItem.name.like(like))
    tasks = list(session.scalars(query.order_by(HumanTask.created_at, HumanTask.id).limit(MAX_ROWS)))
    if not tasks:
        return []
    item_ids = [t.item_id for t in tasks]
    proposers = {uid: name for uid, name in session.execute(select(User.id, User.username).where(
        User.id.in_({t.item.difficulty_proposed_by_id for t in tasks if t.item.difficulty_proposed_by_id})))}
    notes: dict[int, Any] = {}
    for item_id, data in session.execute(
            select(HumanTask.item_id, HumanTask.data).where(
                HumanTask.item_id.in_(item_ids), HumanTask.form == "difficulty_confirmation",
                HumanTask.status == "completed").order_by(HumanTask.id)):
        notes[item_id] = (data or {}).get("complexity_note")
    kinds_of = {t.item_id: statement_kinds(t.item) for t in tasks}
    wanted = {k for kinds in kinds_of.values() for k in kinds}
    latest: dict[tuple[int, str], Artefact] = {}
    for artefact in session.scalars(select(Artefact).where(
            Artefact.item_id.in_(item_ids), Artefact.kind.in_(wanted), Artefact.status == "stored",
            Artefact.department_id.is_(None)).order_by(Artefact.id)):
        latest[(artefact.item_id, artefact.kind)] = artefact
    rows = []
    for task in tasks:
        item = task.item
        levels = {Decimal(str(lv["value"])): lv.get("meaning", "")
                  for lv in (item.service_line.difficulty_levels or [])}
        rows.append(PendingReview(
            task=task, item=item, proposed=item.difficulty, meaning=levels.get(Decimal(item.difficulty), ""),
            proposer=proposers.get(item.difficulty_proposed_by_id) if item.difficulty_proposed_by_id else None,
            note=notes.get(item.id),
            statements=[latest[(item.id, k)] for k in kinds_of[item.id] if (item.id, k) in latest]))
    return rows


def statement_kinds(item: WorkItem) -> list[str]:
    """The evidence kinds the line's difficulty step asks for (the complexity statement, or the line's own)."""
    kinds = item_kinds(item, "difficulty")
    return list(kinds) or [STATEMENT_KIND]
