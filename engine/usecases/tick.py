"""The timer tick's steps: find a due instance under a lock other hosts skip, fire its timers. The runner that
loops over them, one unit of work per instance, is an entry point (api/background.py)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.runtime import budgets
from engine.runtime.expressions import deadline
from engine.usecases.tasks import advance_timers
from storage.models import ProcessInstance


def next_due(session: Session, now: datetime, skip: set[int]) -> ProcessInstance | None:
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


def fire(session: Session, instance: ProcessInstance, now: datetime) -> int:
    """Fire the due timers of one instance `next_due` locked and run its engine steps; flushes only (the runner
    commits each instance in its own unit of work: api/background.py fire_due_timers). Returns how many
    timers fired. Its state is written by compare-and-set: a second host that advanced it first makes this
    raise Conflict, and the runner rolls this instance back (its notifications with it)."""
    # One instance's timers and engine steps get one budget (every evaluation inside has its own too).
    with deadline(budgets.LIMITS.tick_instance_seconds):
        return advance_timers(session, instance, now)
