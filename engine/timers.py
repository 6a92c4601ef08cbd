"""Deadline timers: arm a task's boundary timer with its working-day due date, and fire due timers once."""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from engine import audit, budgets
from engine.errors import Conflict
from engine.expressions import deadline
from engine.policy import roles_granted
from storage.models import HumanTask, Notification, ProcessInstance

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
        timer.task_spec._update(timer)
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
    """A reminder to whoever holds the task (or its group) and an escalation to the project managers."""
    due = task.due_at.isoformat() if task.due_at else "?"
    item = task.item
    reminder = Notification(
        user_id=task.assignee_id, role=None if task.assignee_id else task.role,
        department_id=None if task.assignee_id else task.department_id, item_id=task.item_id, task_id=task.id,
        kind="reminder", created_at=now,
        message=f"任务「{task.title}」（事项 {item.code}）已超过办理期限 {due}，请尽快处理")
    escalations = [Notification(
        role=role, item_id=task.item_id, task_id=task.id, kind="escalation", created_at=now,
        message=f"任务「{task.title}」（事项 {item.code}）超期未办理，期限 {due}")
        for role in roles_granted("task.escalation")]
    session.add_all([reminder, *escalations])
    session.flush()
    for note in (reminder, *escalations):
        audit.record(session, audit.SYSTEM, f"task.{note.kind}", target_type="task", target_id=task.id,
                     item_id=task.item_id, notification=note.id, to_user=note.user_id, to_role=note.role)
    return [reminder, *escalations]


def _next_due(session: Session, now: datetime, skip: set[int]) -> ProcessInstance | None:
    """Lock one due instance; other hosts skip a locked row instead of firing it again."""
    query = (select(ProcessInstance)
             .where(ProcessInstance.next_timer_at.is_not(None), ProcessInstance.next_timer_at <= now,
                    ProcessInstance.status == "running")
             .order_by(ProcessInstance.next_timer_at, ProcessInstance.id).limit(1))
    if skip:
        query = query.where(ProcessInstance.id.not_in(skip))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=ProcessInstance)
    return session.scalars(query).first()


def due_instances(session: Session, now: datetime, limit: int = 100) -> list[ProcessInstance]:
    """The instances whose timers are due (read-only view, e.g. for monitoring)."""
    return list(session.scalars(
        select(ProcessInstance)
        .where(ProcessInstance.next_timer_at.is_not(None), ProcessInstance.next_timer_at <= now,
               ProcessInstance.status == "running")
        .order_by(ProcessInstance.next_timer_at).limit(limit)))


def fire_due_timers(session: Session, now: datetime | None = None, limit: int = 1000) -> int:
    """Fire every due timer once; returns how many instances advanced. One transaction per instance.

    Each instance is locked alone (PostgreSQL: FOR UPDATE SKIP LOCKED) and its state written by
    compare-and-set, so a second `tick` on another host either skips it or loses the write and rolls back
    its notifications with it; SQLite serialises writers and the compare-and-set decides.
    """
    from engine.workflow import advance_timers  # late import: engine.workflow imports this module

    now = now or datetime.now(UTC)
    fired = 0
    seen: set[int] = set()
    while len(seen) < limit:
        instance = _next_due(session, now, seen)
        if instance is None:
            break
        instance_id = instance.id
        seen.add(instance_id)
        try:
            # One instance's timers and engine steps get one budget (every evaluation inside also has its own).
            with deadline(budgets.LIMITS.tick_instance_seconds):
                fired += advance_timers(session, instance, now)
            session.commit()
        except Conflict:
            session.rollback()  # another host advanced it first
        except OperationalError as exc:
            session.rollback()
            if "locked" not in str(exc).lower():
                raise
        except Exception:  # one broken instance must not stop the others' reminders
            session.rollback()
            log.exception("timer tick failed for process instance %s", instance_id)
    session.commit()
    return fired
