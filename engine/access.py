"""Who may see and do what: the authorisation rules, kept in one place and used by every loader."""
from __future__ import annotations

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import Session

from engine.errors import Forbidden, NotFound
from storage.models import HumanTask, User, WorkItem

# Roles that see every item of every department (read access); the others are scoped.
SEE_ALL = {"pm", "auditor", "buyer", "admin", "implementer"}


def item_scope(user: User) -> ColumnElement[bool]:
    """A WHERE clause limiting work items to the ones this user may see."""
    if user.role in SEE_ALL:
        return true()
    if user.role == "dept_reviewer" and user.department_id is not None:
        # A reviewer also sees items where their department has a task (one-things span departments).
        linked = select(HumanTask.item_id).where(HumanTask.department_id == user.department_id)
        return or_(WorkItem.department_id == user.department_id, WorkItem.id.in_(linked))
    return false()


def load_item_for(session: Session, user: User, item_id: int) -> WorkItem:
    """The item, if the user may see it; otherwise 404 so existence is not revealed."""
    item = session.execute(select(WorkItem).where(WorkItem.id == item_id, item_scope(user))).scalar()
    if item is None:
        raise NotFound(f"work item {item_id} not found")
    return item


def task_scope(user: User) -> ColumnElement[bool]:
    if user.role in SEE_ALL:
        return true()
    if user.role == "dept_reviewer" and user.department_id is not None:
        return HumanTask.department_id == user.department_id
    return false()


def load_task_for(session: Session, user: User, task_id: int) -> HumanTask:
    task = session.execute(select(HumanTask).where(HumanTask.id == task_id, task_scope(user))).scalar()
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task


def may_act_on(user: User, task: HumanTask) -> bool:
    """Whether the user holds the role (and department) the task's lane asks for."""
    if user.role != task.role:
        return False
    if task.department_id is not None and user.department_id is not None:
        return user.department_id == task.department_id
    # A department reviewer without a department can never act; an implementer without one serves all.
    return not (user.role == "dept_reviewer" and task.department_id is not None)


def require_act(user: User, task: HumanTask) -> None:
    if not may_act_on(user, task):
        raise Forbidden(f"task {task.id} is for role {task.role}; you are {user.role}", code="not_your_task")


def require_role(user: User, *roles: str) -> None:
    if user.role not in roles:
        raise Forbidden(f"this needs one of the roles {', '.join(roles)}", code="role_required")
