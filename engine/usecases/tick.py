"""The timer tick: fire every due timer, one instance per unit of work, safe with many hosts."""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from engine.errors import Conflict
from engine.runtime import budgets
from engine.runtime.expressions import deadline
from engine.usecases.tasks import advance_timers
from storage.concurrency import is_busy
from storage.models import ProcessInstance
from storage.unit_of_work import unit_of_work

log = logging.getLogger(__name__)


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



def fire_due_timers(session: Session, now: datetime | None = None, limit: int = 1000) -> int:
    """Fire every due timer once; returns how many instances advanced. One transaction per instance.

    Each instance is locked alone (PostgreSQL: FOR UPDATE SKIP LOCKED) and its state written by
    compare-and-set, so a second `tick` on another host either skips it or loses the write and rolls back
    its notifications with it; SQLite serialises writers and the compare-and-set decides.
    """
    now = now or datetime.now(UTC)
    fired = 0
    seen: set[int] = set()
    while len(seen) < limit:
        instance_id = None
        try:
            # The row lock taken by next_due is held until this instance's unit of work ends.
            with unit_of_work(session):
                instance = next_due(session, now, seen)
                if instance is None:
                    break
                instance_id = instance.id
                seen.add(instance_id)
                # One instance's timers and engine steps get one budget (every evaluation inside has its own too).
                with deadline(budgets.LIMITS.tick_instance_seconds):
                    fired += advance_timers(session, instance, now)
        except Conflict:
            pass  # another host advanced it first (rolled back)
        except OperationalError as exc:
            if not is_busy(exc):
                raise
        except Exception:  # one broken instance must not stop the others' reminders
            log.exception("timer tick failed for process instance %s", instance_id)
            if instance_id is None:
                raise
    return fired
