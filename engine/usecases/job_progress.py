"""Progress and heartbeat of a background job attempt (export and import jobs): each write is its own short
transaction guarded by the attempt, so a runner that was given up on writes nothing more and stops."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from storage.models import ExportJob, utcnow
from storage.unit_of_work import Transactions

log = logging.getLogger("engine.usecases.jobs")

# A running job's runner writes a heartbeat every HEARTBEAT_SECONDS (and with every progress update).
HEARTBEAT_SECONDS = 20.0
# Write progress at most this often: each write is its own transaction.
PROGRESS_SECONDS = 1.0
PROGRESS_ROWS = 500


class Superseded(RuntimeError):
    """This runner's attempt was given up on (its heartbeat went stale) and the job belongs to another now."""


class Progress:
    """The progress callback and heartbeat of one attempt: each write is its own short transaction, guarded by
    the attempt, so a runner that was given up on writes nothing and stops at its next report."""

    def __init__(self, transactions: Transactions, job_id: int, attempt: int = 0) -> None:
        self.transactions = transactions
        self.job_id = job_id
        self.attempt = attempt
        self.last_done = -1
        self.last_at = 0.0
        self.superseded = False
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        if self.superseded:
            raise Superseded(f"export job {self.job_id}: attempt {self.attempt} was given up on")
        moment = time.monotonic()
        total = max(total, done)  # rows tallied after the count was taken still get listed
        final = done >= total
        if not final and done - self.last_done < PROGRESS_ROWS and moment - self.last_at < PROGRESS_SECONDS:
            return
        if done == self.last_done:
            return
        self.write(done=done, total=total)
        self.last_done, self.last_at = done, moment

    def write(self, **values: Any) -> None:
        changes: dict[str, Any] = {"heartbeat_at": utcnow()}
        if "done" in values:
            changes["progress_done"] = values.pop("done")
            changes["progress_total"] = values.pop("total")
        changes.update(values)
        with self._lock, self.transactions() as session:
            result = session.execute(update(ExportJob).where(
                ExportJob.id == self.job_id, ExportJob.attempts == self.attempt, ExportJob.status == "running")
                .values(**changes))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            self.superseded = True
            raise Superseded(f"export job {self.job_id}: attempt {self.attempt} was given up on")


def start_heartbeat(report: Progress, name: str) -> Callable[[], None]:
    """Start the attempt's heartbeat thread; what it returns stops the thread and waits for it."""
    stop = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(report, stop), name=name, daemon=True)
    beat.start()

    def end() -> None:
        stop.set()
        beat.join()

    return end


def heartbeat(report: Progress, stop: threading.Event) -> None:
    """Keep the job's heartbeat fresh through long stretches that report no progress (a big upload)."""
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            report.write()
        except Superseded:
            return
        except Exception:  # noqa: BLE001 - a missed beat is retried; a long outage lets the job go stale
            log.warning("export job %s: heartbeat not written", report.job_id, exc_info=True)
