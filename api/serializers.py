"""JSON shapes of the core API (API.md): items, tasks, artefacts, workload entries."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.catalog import ARTEFACT_KINDS, kind_title
from engine.usecases.items import ItemDetail
from storage.models import Artefact, AuditEvent, Department, HumanTask, User, WorkItem, WorkloadEntry


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def money(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01")))


def _masked(item: WorkItem) -> dict[str, Any]:
    """The item's attributes as the caller may see them: personal data masked (脱敏) for roles the contract's
    settings do not clear (engine/trust/masking.py)."""
    from flask import has_request_context

    from api.authz import request_user
    from engine.trust import masking

    attrs = item.attributes or {}
    if not attrs or not has_request_context():
        return attrs
    user = request_user()
    return masking.for_role(attrs, getattr(user, "role", None), item.contract.settings or {})


def item_summary(item: WorkItem) -> dict[str, Any]:
    return {
        "id": item.id, "code": item.code, "name": item.name, "contract": item.contract.code,
        # A contract-level item (a monthly operations report) has neither.
        "service_line": item.service_line.code if item.service_line_id is not None else None,
        "department": item.department.code if item.department_id is not None else None, "channels": item.channels,
        "mode": item.mode, "difficulty": num(item.difficulty), "status": item.status, "stage": item.stage,
        "attributes": _masked(item), "created_at": iso(item.created_at), "completed_at": iso(item.completed_at),
        "units": num(item.units), "period": item.period,
        "go_live_date": item.go_live_date.isoformat() if item.go_live_date else None,
        "out_of_period": bool(item.out_of_period),
        "difficulty_proposed_by": _username(item.difficulty_proposed_by_id),
        "difficulty_confirmed_by": _username(item.difficulty_confirmed_by_id),
    }


def _username(user_id: int | None) -> str | None:
    if user_id is None:
        return None
    from api.extensions import db

    user = db.session.get(User, user_id)
    return user.username if user else None


def task_json(task: HumanTask) -> dict[str, Any]:
    return {
        "id": task.id, "item_id": task.item_id, "name": task.spec_name, "title": task.title, "lane": task.lane,
        "role": task.role, "department": None if task.department_id is None else task.item.department.code
        if task.department_id == task.item.department_id else _dept_code(task),
        "assignee": task.assignee.username if task.assignee else None,
        "status": task.status, "form_key": task.form, "gate": task.gate, "stage": task.stage,
        "due_at": iso(task.due_at), "due_warning": task.due_warning, "created_at": iso(task.created_at),
        "completed_at": iso(task.completed_at), "return_comment": task.return_comment,
        "item_code": task.item.code, "item_name": task.item.name,
    }


# `task_json` of many tasks at once (the inbox, a completion's next tasks), read as plain rows: building ORM
# entities with their joined item, contract, service line and assignee cost several times the query.
# Each key with the column it comes from; the department is the task's own, as in task_json.
_TASK_ROW = (
    ("id", HumanTask.id), ("item_id", HumanTask.item_id), ("name", HumanTask.spec_name), ("title", HumanTask.title),
    ("lane", HumanTask.lane), ("role", HumanTask.role), ("department", Department.code),
    ("assignee", User.username), ("status", HumanTask.status), ("form_key", HumanTask.form),
    ("gate", HumanTask.gate), ("stage", HumanTask.stage), ("due_at", HumanTask.due_at),
    ("due_warning", HumanTask.due_warning), ("created_at", HumanTask.created_at),
    ("completed_at", HumanTask.completed_at), ("return_comment", HumanTask.return_comment),
    ("item_code", WorkItem.code), ("item_name", WorkItem.name),
)
_TASK_TIMES = frozenset({"due_at", "created_at", "completed_at"})


def task_rows_json(session: Session, where: Any, order: tuple[Any, ...], offset: int,
                   limit: int | None) -> list[dict[str, Any]]:
    """`task_json` of the tasks matching `where`, in `order`, from one query of plain rows."""
    query = (select(*(column for _, column in _TASK_ROW)).join(WorkItem, WorkItem.id == HumanTask.item_id)
             .outerjoin(Department, Department.id == HumanTask.department_id)
             .outerjoin(User, User.id == HumanTask.assignee_id)
             .where(where).order_by(*order).offset(offset).limit(limit))
    return [{key: iso(value) if key in _TASK_TIMES else value for (key, _), value in zip(_TASK_ROW, row, strict=True)}
            for row in session.execute(query)]


def _dept_code(task: HumanTask) -> str | None:
    from api.extensions import db
    from storage.models import Department

    if task.department_id is None:
        return None
    dept = db.session.get(Department, task.department_id)
    return dept.code if dept else None


def artefact_json(artefact: Artefact) -> dict[str, Any]:
    return {
        "id": artefact.id, "item_id": artefact.item_id, "kind": artefact.kind,
        "title": artefact_title(artefact), "filename": artefact.filename,
        "size": artefact.size, "sha256": artefact.sha256, "media_type": artefact.media_type,
        "version_id": artefact.version_id, "uploaded_by": artefact.uploaded_by.username,
        "uploaded_at": iso(artefact.uploaded_at), "task_id": artefact.task_id,
        # The department whose own evidence this is (a per-department step's); None: the whole item's.
        "department": artefact.department.code if artefact.department_id is not None and artefact.department
        else None,
    }


def artefact_title(artefact: Artefact) -> str:
    """A built-in kind's title, or the one the item's contract declares for its own kind."""
    if artefact.kind in ARTEFACT_KINDS:
        return ARTEFACT_KINDS[artefact.kind]
    from api.extensions import db
    from storage.models import Contract

    settings = db.session.execute(select(Contract.settings).join(WorkItem, WorkItem.contract_id == Contract.id)
                                  .where(WorkItem.id == artefact.item_id)).scalar()
    return kind_title(artefact.kind, settings)


def history_json(event: AuditEvent) -> dict[str, Any]:
    return {"at": iso(event.at), "user": event.username, "role": event.role, "event": event.event_type,
            "target": f"{event.target_type}:{event.target_id}", "outcome": event.outcome, "detail": event.detail}


def item_detail_json(detail: ItemDetail) -> dict[str, Any]:
    """An item with its tasks, visible artefacts, open gates and history (engine/usecases/items.py)."""
    settings = detail.item.contract.settings
    return {
        **item_summary(detail.item),
        "tasks": [task_json(t) for t in detail.tasks],
        "artefacts": [artefact_json(a) for a in detail.artefacts],
        "gates": [{"gate": g.gate, "task_id": g.task.id, "required": [
            {"kind": s.kind, "title": kind_title(s.kind, settings), "present": s.artefact is not None}
            for s in g.required]} for g in detail.gates],
        "history": [history_json(e) for e in detail.history],
    }


def entry_json(entry: WorkloadEntry) -> dict[str, Any]:
    return {
        "id": entry.id, "item_id": entry.item_id, "item_code": entry.item.code, "item_name": entry.item.name,
        "service_line": entry.service_line.code, "channel": entry.channel, "mode": entry.mode,
        "units": num(entry.units), "difficulty": num(entry.difficulty), "unit_price": num(entry.unit_price),
        "amount": money(entry.amount), "tallied_at": iso(entry.tallied_at), "reverses": entry.reverses_id,
        "reason": entry.reason, "difficulty_proposed_by": _username(entry.difficulty_proposed_by_id),
        "difficulty_confirmed_by": _username(entry.difficulty_confirmed_by_id),
    }
