"""Background export jobs: queue a long export, render it with progress, store the result as an object."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import uuid
from datetime import date, datetime, timedelta
from typing import IO, Any, cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine.errors import Invalid, NotFound
from engine.money.exports import EXPORTS, ExportRequest, background_kinds
from engine.money.reports import WorkloadFilter
from engine.trust.policy import ALL, authorize
from engine.usecases.job_progress import Progress as _Progress
from engine.usecases.job_progress import Superseded, start_heartbeat
from storage.artefact_store import ArtefactStore
from storage.models import ExportJob, User, utcnow
from storage.unit_of_work import Transactions

log = logging.getLogger(__name__)

JOB_ACTION = "export.job"
FILTER_KEYS = ("contract", "from", "to", "department", "service_line")
# A running job's runner writes a heartbeat every HEARTBEAT_SECONDS (and with every progress update); a job
# silent for STALE_AFTER belongs to a process that died (restart, crash, OOM kill, lost host), and the next
# `itemgate tick` or `serve` on any host takes it up again, at most MAX_ATTEMPTS times in all.
STALE_AFTER = timedelta(minutes=2)
MAX_ATTEMPTS = 3
STALE_NOTE = "the process running this export stopped; the next `itemgate tick` (or `serve`) takes it up again"
# Write progress at most this often: each write is its own transaction.
MAX_RESULT_BYTES = 1 << 40


def _clean_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(params[k]).strip()[:64] for k in FILTER_KEYS if params.get(k) and str(params[k]).strip()}


def filter_of(params: dict[str, Any]) -> WorkloadFilter:
    """The workload filter a job's stored parameters describe; unreadable dates are ignored, as on the page."""

    def day(value: Any) -> date | None:
        try:
            return date.fromisoformat(value) if value else None
        except (TypeError, ValueError):
            return None

    return WorkloadFilter(contract=params.get("contract") or None, date_from=day(params.get("from")),
                          date_to=day(params.get("to")), department=params.get("department") or None,
                          service_line=params.get("service_line") or None)


def create_job(session: Session, user: User, kind: str, params: dict[str, Any]) -> ExportJob:
    """Queue an export for `user`; the caller commits and then starts (or schedules) run_job."""
    spec = background_kinds().get(kind)
    if spec is None:
        raise Invalid(f"unknown export kind {kind!r}", code="unknown_kind")
    authorize(user, JOB_ACTION)
    authorize(user, spec.action)
    job = ExportJob(kind=kind, params=_clean_params(params), requested_by_id=user.id, status="queued",
                    progress_done=0, progress_total=0, created_at=utcnow())
    session.add(job)
    session.flush()
    return job


def load_job_for(session: Session, user: User, job_id: int) -> ExportJob:
    """The job if `user` may see it: the requester's own, or any for a role whose scope is all rows.
    Anything else answers 404, so job ids leak nothing."""
    scope = authorize(user, JOB_ACTION)
    job = session.get(ExportJob, job_id)
    if job is None or (scope != ALL and job.requested_by_id != user.id):
        raise NotFound(f"export job {job_id} not found")
    return job


def is_stale(job: ExportJob, now: datetime) -> bool:
    """A running job whose runner has stopped writing its heartbeat."""
    if job.status != "running":
        return False
    last = job.heartbeat_at or job.started_at or job.created_at
    return last < now - STALE_AFTER


def shown(job: ExportJob, now: datetime) -> tuple[str, str | None]:
    """(status, error) as a reader should see them: a job abandoned by a dead process waits to be taken up
    again (the next tick queues it, or fails it for good after MAX_ATTEMPTS)."""
    if is_stale(job, now):
        return "queued", STALE_NOTE
    return job.status, job.error


def job_json(job: ExportJob, now: datetime) -> dict[str, Any]:
    status, error = shown(job, now)
    return {"id": job.id, "kind": job.kind, "params": job.params, "status": status,
            "progress": {"done": job.progress_done, "total": job.progress_total},
            "error": error, "attempts": job.attempts, "size": job.size, "sha256": job.sha256,
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None}


RUNNER = f"{socket.gethostname()[:150]}:{os.getpid()}"


def _claim(transactions: Transactions, job_id: int | None = None) -> ExportJob | None:
    """Move a queued job (this one, or the oldest) to running as a new attempt of this process; None if there
    is none or another runner got there first. The oldest is picked under a row lock that other runners skip
    (SKIP LOCKED on PostgreSQL), and the move itself is a guarded UPDATE, so each attempt has one runner."""
    with transactions() as session:
        if job_id is None:
            job_id = session.execute(select(ExportJob.id).where(ExportJob.status == "queued")
                                     .order_by(ExportJob.id).limit(1).with_for_update(skip_locked=True)).scalar()
            if job_id is None:
                return None
        now = utcnow()
        claimed = session.execute(update(ExportJob)
                                  .where(ExportJob.id == job_id, ExportJob.status == "queued")
                                  .values(status="running", started_at=now, heartbeat_at=now, runner=RUNNER,
                                          attempts=ExportJob.attempts + 1))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job = session.get(ExportJob, job_id, populate_existing=True)
        if job is not None:
            session.expunge(job)  # the runner reads it after this unit of work ended
    return job


def recover_stale(transactions: Transactions, now: datetime | None = None) -> list[int]:
    """Running jobs whose heartbeat stopped: queued again with the reason, or failed for good after
    MAX_ATTEMPTS. Safe with many hosts: rows another recoverer holds are skipped, and each change is guarded
    by the attempt and the stale heartbeat it was decided on."""
    now = now or utcnow()
    cutoff = now - STALE_AFTER
    recovered: list[int] = []
    with transactions() as session:
        stale = session.execute(select(ExportJob.id, ExportJob.attempts, ExportJob.runner, ExportJob.heartbeat_at)
                                .where(ExportJob.status == "running", ExportJob.heartbeat_at < cutoff)
                                .order_by(ExportJob.id).with_for_update(skip_locked=True)).all()
        for job_id, attempts, runner, heartbeat in stale:
            reason = (f"attempt {attempts} stopped: its process ({runner or 'unknown'}) sent no heartbeat after "
                      f"{heartbeat.isoformat() if heartbeat else '?'}")
            values: dict[str, Any]
            if attempts >= MAX_ATTEMPTS:
                values = {"status": "failed", "finished_at": now,
                          "error": f"{reason}; given up after {attempts} attempts"}
            else:
                values = {"status": "queued", "error": f"{reason}; queued again"}
            done = session.execute(update(ExportJob).where(
                ExportJob.id == job_id, ExportJob.status == "running", ExportJob.attempts == attempts,
                ExportJob.heartbeat_at < cutoff).values(**values))
            if done.rowcount == 1:  # type: ignore[attr-defined]
                log.warning("export job %s: %s", job_id, values["error"])
                recovered.append(job_id)
    return recovered


def jobs_waiting(session: Session, now: datetime | None = None) -> bool:
    """Whether a runner has anything to do: a queued job, or a running one whose heartbeat stopped."""
    cutoff = (now or utcnow()) - STALE_AFTER
    return session.execute(select(ExportJob.id).where(
        (ExportJob.status == "queued") | ((ExportJob.status == "running") & (ExportJob.heartbeat_at < cutoff)))
        .limit(1)).first() is not None


def run_pending(transactions: Transactions, store: ArtefactStore, limit: int | None = None,
                now: datetime | None = None) -> dict[str, int]:
    """What `tick` and `serve` do for export jobs: take up the jobs of dead processes, then run queued jobs one
    after another (at most `limit`). Returns how many were recovered and how each run ended."""
    counts = {"recovered": len(recover_stale(transactions, now))}
    ran = 0
    while limit is None or ran < limit:
        job = _claim(transactions)
        if job is None:
            break
        ran += 1
        outcome = _run_claimed(transactions, store, job)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _render(session: Session, store: ArtefactStore, job: ExportJob, out: Any, report: _Progress) -> None:
    described = ", ".join(f"{k}={v}" for k, v in (job.params or {}).items() if v) or "全部"
    built = EXPORTS[job.kind].build(ExportRequest(session, filter_of(job.params or {}), store, described,
                                                  progress=report))
    # A file is a chunk iterator too (of lines), so tell them apart by `read`.
    if hasattr(built, "read"):
        book = cast(IO[bytes], built)
        try:
            shutil.copyfileobj(book, out, 1 << 16)
        finally:
            book.close()
    else:
        for chunk in built:
            out.write(chunk)


def run_job(transactions: Transactions, store: ArtefactStore, job_id: int) -> str:
    """Claim one queued job and run it (see _run_claimed). Returns 'done', 'failed', 'superseded', or 'skipped'
    if the job was not queued."""
    job = _claim(transactions, job_id)
    if job is None:
        return "skipped"
    return _run_claimed(transactions, store, job)


def _run_claimed(transactions: Transactions, store: ArtefactStore, job: ExportJob) -> str:
    """Render the job's export to a temp file with progress, store it under exports/{id}/{uuid} and record
    the object. Every write is its own short transaction, guarded by the attempt; the rendering reads run in
    a session of their own; a heartbeat thread keeps the job fresh meanwhile."""
    if job.kind == "item_import":  # a bulk intake queued from the web (engine/usecases/import_jobs.py)
        from engine.usecases.import_jobs import run_import

        return run_import(transactions, store, job)
    job_id = job.id
    report = _Progress(transactions, job_id, job.attempts)
    end_heartbeat = start_heartbeat(report, f"export-job-{job_id}-heartbeat")
    try:
        try:
            with tempfile.TemporaryFile(prefix="itemgate-export-") as out:
                with transactions() as session:  # reads only
                    _render(session, store, job, out, report)
                size = out.tell()
                out.seek(0)
                report.write()  # a heartbeat before the upload, which reports no progress of its own
                stored = store.put_stream(f"exports/{job_id}/{uuid.uuid4().hex}", out, size,
                                          EXPORTS[job.kind].content_type, MAX_RESULT_BYTES)
        except Superseded:
            log.warning("export job %s: attempt %s was given up on; another runner has it", job_id, job.attempts)
            return "superseded"
        except Exception as exc:  # noqa: BLE001 - any failure ends the job as failed, with the reason recorded
            log.exception("export job %s failed", job_id)
            try:
                report.write(status="failed", error=(f"{type(exc).__name__}: {exc}")[:4000], finished_at=utcnow())
            except Superseded:
                return "superseded"
            return "failed"
        try:
            report.write(status="done", bucket=stored.bucket, key=stored.key, version_id=stored.version_id,
                         size=stored.size, sha256=stored.sha256, error=None, finished_at=utcnow())
        except Superseded:
            # Another runner owns the job now and will store its own result; this object is an orphan that
            # `itemgate fsck` does not sweep (exports live outside the evidence prefix), so drop it here.
            try:
                store.delete(stored.key, stored.version_id)
            except Exception:  # noqa: BLE001 - best effort; the object is unreferenced either way
                log.warning("export job %s: could not remove a superseded result", job_id, exc_info=True)
            return "superseded"
        return "done"
    finally:
        end_heartbeat()
