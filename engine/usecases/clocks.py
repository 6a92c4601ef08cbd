"""Every contract clock that is still running, for the PM dashboard: settlement materials and revisions,
monthly operations reports (and their revisions), rectifications. Counted in Chinese working days with the
project calendar where they were set (engine/contract/schedule.py)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.usecases.settlement import clock_state
from storage.models import Contract, ContractTask, Settlement


def running_clocks(session: Session, now: datetime, contract_code: str | None = None) -> list[dict[str, Any]]:
    contracts = {c.id: c.code for c in session.scalars(select(Contract))}
    wanted = None if contract_code is None else next((i for i, c in contracts.items() if c == contract_code), -1)
    out: list[dict[str, Any]] = []
    query = select(Settlement).where(Settlement.status != "approved")
    if wanted is not None:
        query = query.where(Settlement.contract_id == wanted)
    for s in session.scalars(query):
        if s.first_submitted_at is None and s.due_at is not None:
            out.append({"kind": "settlement_materials", "name": "结算材料提交", "title": s.label,
                        "contract": contracts.get(s.contract_id), "settlement_id": s.id, "due_at": s.due_at,
                        "state": clock_state(s.due_at, None, now)})
        if s.revision_due_at is not None:
            out.append({"kind": "settlement_revision", "name": "结算修改完善", "title": s.label,
                        "contract": contracts.get(s.contract_id), "settlement_id": s.id,
                        "due_at": s.revision_due_at, "state": clock_state(s.revision_due_at, None, now)})
    tq = select(ContractTask).where(ContractTask.status.in_(("open", "returned")))
    if wanted is not None:
        tq = tq.where(ContractTask.contract_id == wanted)
    for t in session.scalars(tq):
        due = t.revision_due_at if t.status == "returned" else t.due_at
        if due is None:
            continue
        name = {"monthly_report": "月度运营报告", "rectification": "整改"}.get(t.kind, t.kind)
        out.append({"kind": t.kind, "name": name, "title": t.title, "contract": contracts.get(t.contract_id),
                    "task_id": t.id, "settlement_id": t.settlement_id, "due_at": due,
                    "state": clock_state(due, None, now)})
    out.sort(key=lambda c: c["due_at"])
    return out
