"""What a user's lists show: the authorised queries behind the item list and the task inbox (REST and web)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from engine.errors import Forbidden
from engine.trust.access import item_scope, task_scope
from engine.trust.policy import may
from storage.models import Contract, Department, HumanTask, ServiceLine, User, WorkItem


def filtered_items(user: User, args: dict[str, Any]) -> Select[Any]:
    """The items the user may read, narrowed by the list's filters (department, service line, contract, status,
    stage, text in name or code)."""
    query = select(WorkItem).where(item_scope(user))
    if args.get("department"):
        query = query.join(Department, WorkItem.department_id == Department.id).where(
            Department.code == args["department"])
    if args.get("service_line"):
        query = query.join(ServiceLine, WorkItem.service_line_id == ServiceLine.id).where(
            ServiceLine.code == args["service_line"])
    if args.get("contract"):
        query = query.join(Contract, WorkItem.contract_id == Contract.id).where(Contract.code == args["contract"])
    if args.get("status"):
        query = query.where(WorkItem.status == args["status"])
    if args.get("stage"):
        query = query.where(WorkItem.stage == args["stage"])
    if args.get("q"):
        like = f"%{args['q']}%"
        query = query.where((WorkItem.name.like(like)) | (WorkItem.code.like(like)))
    return query


def task_query(user: User, scope: str) -> Select[Any]:
    """Open tasks of an inbox scope: `mine` (held by the user), `group` (the user's lane and department, free or
    held by them), `all` (every task the user may read; for the roles granted task.queue_all)."""
    query = select(HumanTask).where(HumanTask.status == "ready")
    if scope == "mine":
        return query.where(HumanTask.assignee_id == user.id)
    if scope == "group":
        query = query.where(HumanTask.role == user.role,
                            (HumanTask.assignee_id.is_(None)) | (HumanTask.assignee_id == user.id))
        if user.department_id is not None:
            query = query.where(HumanTask.department_id == user.department_id)
        return query
    if not may(user, "task.queue_all"):
        raise Forbidden("scope=all is for the pm, auditor, buyer and admin roles", code="role_required")
    return query.where(task_scope(user))
