"""Background work outside requests, the entry points that are not routes: the timer tick, the notification
outbox and export jobs (on a daemon thread, `tick` or `serve`). Each runner owns its transactions: it opens one
unit of work per step (an instance's timers, a delivery's claim and its settling), the engine's steps only
flush."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from api.extensions import db
from engine.errors import Conflict
from engine.trust.delivery import Sender
from engine.usecases.jobs import run_job
from storage.concurrency import is_busy
from storage.unit_of_work import transactions, unit_of_work

log = logging.getLogger(__name__)


def fire_due_timers(session: Session, now: datetime | None = None, limit: int = 1000) -> int:
    """Fire every due timer once; returns how many timers fired. One unit of work per instance.

    Each instance is locked alone (PostgreSQL: FOR UPDATE SKIP LOCKED) and its state written by
    compare-and-set, so a second `tick` on another host either skips it or loses the write and rolls back
    its notifications with it; SQLite serialises writers and the compare-and-set decides.
    """
    from engine.usecases import tick

    now = now or datetime.now(UTC)
    fired = 0
    seen: set[int] = set()
    while len(seen) < limit:
        instance_id = None
        try:
            # The row lock taken by next_due is held until this instance's unit of work ends.
            with unit_of_work(session):
                instance = tick.next_due(session, now, seen)
                if instance is None:
                    break
                instance_id = instance.id
                seen.add(instance_id)
                fired += tick.fire(session, instance, now)
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


def open_monthly_reports(session: Session, now: datetime | None = None) -> int:
    """Open the work item of every monthly report whose month has ended (engine/usecases/monthly_report.py
    open_month), one unit of work per contract; returns how many were opened. Safe on several hosts: each report
    row is locked (PostgreSQL) and read again before its item is created, and the row's unique item id refuses
    a second one."""
    from engine.usecases import monthly_report as mr
    from engine.usecases.tasks import Ctx

    now = now or datetime.now(UTC)
    opened = 0
    # One query on every tick; a contract is walked only when one of its months has ended unopened.
    for contract_id in mr.contracts_to_open(session, now):
        try:
            with unit_of_work(session):
                opened += mr.open_ended(Ctx(session=session, user=None, request_id="tick", now=now), contract_id)
        except (Conflict, IntegrityError):
            pass  # another host opened them first (rolled back)
        except OperationalError as exc:
            if not is_busy(exc):
                raise
        except Exception:  # one contract's broken report must not stop the others, nor the timers after them
            log.exception("opening the monthly reports of contract %s failed", contract_id)
    return opened


def deliver_pending(session: Session, send: Sender, *, now: Callable[[], datetime] | None = None,
                    limit: int = 100) -> dict[str, int]:
    """Send due deliveries one by one, each claimed and then settled in its own short unit of work; nothing is
    held open while a message is on its way. Returns counts of sent, retried and failed."""
    from engine.trust import delivery

    clock = now or (lambda: datetime.now(UTC))
    counts = {"sent": 0, "retry": 0, "failed": 0}
    for _ in range(limit):
        with unit_of_work(session):
            row = delivery.claim_next(session, clock())
        if row is None:
            break
        error = delivery.send_claimed(row, send)
        with unit_of_work(session):
            counts[delivery.settle(session, row, error, clock())] += 1
    return counts


def start_job(app: Flask, job_id: int) -> threading.Thread | None:
    """Start rendering a committed, queued job in the background. With EXPORT_JOBS_THREAD set false (tests),
    nothing starts and the caller runs engine.usecases.jobs.run_job itself."""
    if not app.config.get("EXPORT_JOBS_THREAD", True):
        return None

    def work() -> None:
        # A fresh app context: db.session here is this thread's own, never the request's.
        with app.app_context():
            try:
                factory = sessionmaker(bind=db.engine, expire_on_commit=False)
                run_job(transactions(factory), app.extensions["itemgate_store"], job_id)
            finally:
                db.remove_session()

    thread = threading.Thread(target=work, name=f"export-job-{job_id}", daemon=True)
    thread.start()
    return thread


def deliver_notifications(app: Flask, limit: int = 100) -> dict[str, int]:
    """Send due notification deliveries (engine/trust/delivery.py) on a session of their own; used by `tick` and by the
    serve loop, so a request that raised a notification never waits for a mail server or a chat robot."""
    from engine.trust.delivery import apprise_sender

    with app.app_context():
        session = sessionmaker(bind=db.engine, expire_on_commit=False)()
        try:
            return deliver_pending(session, apprise_sender(app.config["ITEMGATE"].smtp), limit=limit)
        finally:
            session.close()
