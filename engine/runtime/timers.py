"""Deadline timers: arm a task's boundary timer with its working-day due date, and fire due timers once."""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.util.task import TaskState
from sqlalchemy.orm import Session

from engine.runtime import spiff
from engine.trust import audit
from engine.trust.policy import roles_granted
from storage.models import HumanTask, Notification, User

log = logging.getLogger("itemgate.timers")

# Boundary timers on review/sign-off tasks read their date from this task-data variable
# (<timeDate>due_at_iso</timeDate>); SpiffWorkflow evaluates it with our restricted script engine. Every
# instance starts with the variable set to "never" so a timer is harmless until the engine has computed the
# working-day deadline and written it into the timer's data (arm_deadline_timers).
DUE_VARIABLE = "due_at_iso"
NO_DEADLINE = "9999-12-31T00:00:00+00:00"


def _is_timer(task: Any) -> bool:
    event_def = getattr(task.task_spec, "event_definition", None)
    return isinstance(event_def, TimerEventDefinition)


def deadline_timers(user_task: Any) -> list[Any]:
    """The waiting boundary timers attached to one READY user task (its siblings under the boundary split)."""
    parent = user_task.parent
    if parent is None or not type(parent.task_spec).__name__.startswith("BoundaryEventSplit"):
        return []
    return [t for t in parent.children if t is not user_task and _is_timer(t) and t.state == TaskState.WAITING]


def arm_deadline_timers(user_task: Any, due_at: datetime) -> int:
    """Point the task's boundary timers at `due_at`; the model's expression is re-evaluated by Spiff."""
    timers = deadline_timers(user_task)
    if not timers:
        return 0
    # The timer inherits its data from the boundary split; setting it there (not on the timer) survives the
    # re-inheritance Spiff performs on every update.
    user_task.parent.data[DUE_VARIABLE] = due_at.astimezone(UTC).isoformat()
    for timer in timers:
        timer.internal_data.pop("event_value", None)
        timer.internal_data.pop("event_fired", None)
        spiff.update_task(timer)
    return len(timers)


def disarm_deadline_timers(user_task: Any) -> None:
    """Back to "never" before a task is reset: its timers are re-created from the boundary split's data, and a
    stale deadline would otherwise fire at once, unseen. The projection arms them again."""
    parent = user_task.parent
    if parent is not None and type(parent.task_spec).__name__.startswith("BoundaryEventSplit"):
        parent.data[DUE_VARIABLE] = NO_DEADLINE


def waiting_timer_ids(workflow: Any) -> dict[str, Any]:
    return {str(t.id): t for t in workflow.get_tasks(state=TaskState.WAITING) if _is_timer(t)}


def attached_user_task(timer: Any) -> Any | None:
    parent = timer.parent
    if parent is None:
        return None
    return next((t for t in parent.children if t is not timer and not _is_timer(t)
                 and getattr(t.task_spec, "manual", False)), None)


def notify_overdue(session: Session, task: HumanTask, now: datetime) -> list[Notification]:
    """A reminder to whoever holds the task (or, unclaimed, each member of its queue) and an escalation to
    every project manager, each with their own read state (engine/trust/notify.py)."""
    from engine.trust.notify import Event, notify, queue_members, role_members

    due = task.due_at.isoformat() if task.due_at else "?"
    item = task.item
    holder = session.get(User, task.assignee_id) if task.assignee_id else None
    params = {"task": task.title, "code": item.code, "due": due}
    reminded = notify(session, Event(
        "reminder", "task.overdue_reminder", params, item_id=task.item_id, task_id=task.id,
        role=None if holder else task.role,
        department_id=None if holder else task.department_id),
        [holder] if holder is not None else queue_members(session, task), now=now)
    escalated: list[Notification] = []
    for role in roles_granted("task.escalation"):
        escalated += notify(session, Event(
            "escalation", "task.overdue_escalation", params, item_id=task.item_id, task_id=task.id, role=role),
            role_members(session, role), now=now)
    for kind, rows in (("reminder", reminded), ("escalation", escalated)):
        audit.record(session, audit.SYSTEM, f"task.{kind}", target_type="task", target_id=task.id,
                     item_id=task.item_id, notifications=[n.id for n in rows],
                     to_users=[n.user_id for n in rows])
    return reminded + escalated

