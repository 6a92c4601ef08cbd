"""Who may see and do what: loaders and row scopes that apply the matrix in engine/trust/policy.py."""
from __future__ import annotations

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

from engine.errors import Forbidden, NotFound
from engine.trust.policy import ALL, DEPARTMENT, LANE, authorize, needs_department, scope_of
from storage.models import Artefact, HumanTask, User, WorkItem

__all__ = ["artefact_scope", "authorize", "item_scope", "load_artefact_for", "load_item_for", "load_task_for",
           "may_act_on", "may_see_artefact", "require_act", "task_scope"]


def item_scope(user: User, action: str = "item.read") -> ColumnElement[bool]:
    """A WHERE clause limiting work items to the ones this user may reach for `action`."""
    scope = scope_of(user.role, action)
    if scope == ALL:
        return true()
    if scope == DEPARTMENT and user.department_id is not None:
        # A reviewer also sees items where their department has a task (one-things span departments).
        linked = select(HumanTask.item_id).where(HumanTask.department_id == user.department_id)
        return or_(WorkItem.department_id == user.department_id, WorkItem.id.in_(linked))
    return false()


def load_item_for(session: Session, user: User, item_id: int, action: str = "item.read") -> WorkItem:
    """The item, if the user may reach it for `action`; 403 for a role never granted it, else 404 so
    existence is not revealed."""
    authorize(user, action)
    item = session.execute(select(WorkItem).where(WorkItem.id == item_id, item_scope(user, action))).scalar()
    if item is None:
        raise NotFound(f"work item {item_id} not found")
    return item


def artefact_scope(user: User, action: str = "artefact.read") -> ColumnElement[bool]:
    """A WHERE clause limiting an item's artefacts to the ones this user may see: with a department scope, the
    whole item's evidence and the user's own department's, never another department's."""
    if scope_of(user.role, action) == DEPARTMENT:
        return or_(Artefact.department_id.is_(None), Artefact.department_id == user.department_id)
    return true()


def load_artefact_for(session: Session, user: User, artefact_id: int) -> Artefact:
    """The artefact, authorised through its item; 404 also for another department's evidence."""
    artefact = session.get(Artefact, artefact_id)
    if artefact is None:
        raise NotFound(f"artefact {artefact_id} not found")
    load_item_for(session, user, artefact.item_id, "artefact.read")
    if not may_see_artefact(user, artefact):
        raise NotFound(f"artefact {artefact_id} not found")
    return artefact


def may_see_artefact(user: User, artefact: Artefact, action: str = "artefact.read") -> bool:
    """`artefact_scope` for one artefact already loaded (its item already authorised)."""
    if scope_of(user.role, action) == DEPARTMENT:
        return artefact.department_id is None or artefact.department_id == user.department_id
    return True


def task_scope(user: User, action: str = "task.read") -> ColumnElement[bool]:
    scope = scope_of(user.role, action)
    if scope == ALL:
        return true()
    if scope == DEPARTMENT and user.department_id is not None:
        return HumanTask.department_id == user.department_id
    return false()


def load_task_for(session: Session, user: User, task_id: int, action: str = "task.read",
                  *options: ORMOption) -> HumanTask:
    """The task, if the user may reach it (else 404); `options` shape the load for the caller's use."""
    authorize(user, "task.read")
    task = session.execute(select(HumanTask).where(HumanTask.id == task_id, task_scope(user))
                           .options(*options)).scalar()
    if task is None:
        raise NotFound(f"task {task_id} not found")
    if action != "task.read":
        authorize(user, action)
    return task


def may_act_on(user: User, task: HumanTask, action: str = "task.complete") -> bool:
    """Whether the user holds the role (and department) the task's lane asks for."""
    if scope_of(user.role, action) != LANE or user.role != task.role:
        return False
    if task.department_id is not None and user.department_id is not None:
        return user.department_id == task.department_id
    # A role that needs a department can never act without one; an implementer without one serves all.
    return not (needs_department(user.role) and task.department_id is not None)


def require_act(user: User, task: HumanTask, action: str = "task.complete") -> None:
    if not may_act_on(user, task, action):
        raise Forbidden(f"task {task.id} is for role {task.role}; you are {user.role}", code="not_your_task")
