"""Timer firing for `itemgate tick`: advance instances whose timers are due, once, from any host."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ProcessInstance


def due_instances(session: Session, now: datetime, limit: int = 100) -> list[ProcessInstance]:
    """Lock due instances; other hosts skip the locked rows instead of firing them again."""
    query = (select(ProcessInstance)
             .where(ProcessInstance.next_timer_at.is_not(None), ProcessInstance.next_timer_at <= now,
                    ProcessInstance.status == "running")
             .order_by(ProcessInstance.next_timer_at).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def fire_due_timers(session: Session, now: datetime | None = None) -> int:
    """Fire every due timer once; returns how many instances advanced. Commits per instance."""
    from engine.workflow import advance_timers  # late import: workflow imports this module's callers

    now = now or datetime.now(UTC)
    fired = 0
    for instance in due_instances(session, now):
        fired += advance_timers(session, instance, now)
        session.commit()
    session.commit()
    return fired
