"""Background export jobs: queue a long export, render it with progress, store the result as an object."""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from engine.bundle import stream_bundle
from engine.errors import Invalid, NotFound
from engine.policy import ALL, authorize
from engine.reports import WorkloadFilter, csv_stream, xlsx_file
from storage.artefact_store import ArtefactStore
from storage.models import ExportJob, User, utcnow

log = logging.getLogger(__name__)

JOB_ACTION = "export.job"
FILTER_KEYS = ("contract", "from", "to", "department", "service_line")
# A running job writes a heartbeat with every progress update; one silent for this long belongs to a
# process that died (restart, crash, OOM kill) and will never finish.
STALE_AFTER = timedelta(minutes=15)
STALE_ERROR = "no progress for 15 minutes: the process running this export stopped"
# Write progress at most this often: each write is its own transaction.
PROGRESS_SECONDS = 1.0
PROGRESS_ROWS = 500
MAX_RESULT_BYTES = 1 << 40


@dataclass(frozen=True)
class Kind:
    action: str
    content_type: str
    name: str
    ascii_name: str


KINDS = {
    "workload_xlsx": Kind("workload.read", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                          "工作量统计明细表.xlsx", "workload.xlsx"),
    "workload_csv": Kind("workload.read", "text/csv; charset=utf-8", "工作量统计明细表.csv", "workload.csv"),
    "evidence_zip": Kind("settlement.read", "application/zip", "佐证材料.zip", "evidence.zip"),
}


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
    spec = KINDS.get(kind)
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
    if job.status not in ("queued", "running"):
        return False
    last = job.heartbeat_at or job.started_at or job.created_at
    return last < now - STALE_AFTER


def shown(job: ExportJob, now: datetime) -> tuple[str, str | None]:
    """(status, error) as a reader should see them: a job abandoned by a dead process shows as failed."""
    if is_stale(job, now):
        return "failed", STALE_ERROR
    return job.status, job.error


def job_json(job: ExportJob, now: datetime) -> dict[str, Any]:
    status, error = shown(job, now)
    return {"id": job.id, "kind": job.kind, "params": job.params, "status": status,
            "progress": {"done": job.progress_done, "total": job.progress_total},
            "error": error, "size": job.size, "sha256": job.sha256,
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None}


class _Progress:
    """The progress callback: writes (done, total) in its own short transaction, throttled."""

    def __init__(self, session_factory: Callable[[], Session], job_id: int) -> None:
        self.session_factory = session_factory
        self.job_id = job_id
        self.last_done = -1
        self.last_at = 0.0

    def __call__(self, done: int, total: int) -> None:
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
        with self.session_factory() as session:
            session.execute(update(ExportJob).where(ExportJob.id == self.job_id).values(**changes))
            session.commit()


def _claim(session_factory: Callable[[], Session], job_id: int) -> ExportJob | None:
    """Move the job from queued to running; None if another runner got there first (or it is gone)."""
    with session_factory() as session:
        now = utcnow()
        claimed = session.execute(update(ExportJob)
                                  .where(ExportJob.id == job_id, ExportJob.status == "queued")
                                  .values(status="running", started_at=now, heartbeat_at=now))
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job = session.get(ExportJob, job_id)
        session.expunge(job)
        return job


def _render(session: Session, store: ArtefactStore, job: ExportJob, out: Any, report: _Progress) -> None:
    f = filter_of(job.params or {})
    if job.kind == "workload_xlsx":
        book = xlsx_file(session, f, progress=report)
        try:
            shutil.copyfileobj(book, out, 1 << 16)
        finally:
            book.close()
    elif job.kind == "workload_csv":
        for chunk in csv_stream(session, f, progress=report):
            out.write(chunk)
    else:
        described = ", ".join(f"{k}={v}" for k, v in (job.params or {}).items() if v) or "全部"
        for chunk in stream_bundle(session, store, f, f"筛选：{described}", progress=report):
            out.write(chunk)


def run_job(session_factory: Callable[[], Session], store: ArtefactStore, job_id: int) -> str:
    """Render the job's export to a temp file with progress, store it under exports/{id}/{uuid} and record
    the object. Returns the final status ('done' or 'failed'), or 'skipped' if the job was not queued.
    Every write is its own short transaction; the rendering reads run in a session of their own."""
    job = _claim(session_factory, job_id)
    if job is None:
        return "skipped"
    report = _Progress(session_factory, job_id)
    try:
        with tempfile.TemporaryFile(prefix="itemgate-export-") as out:
            with session_factory() as session:
                _render(session, store, job, out, report)
            size = out.tell()
            out.seek(0)
            report.write()  # a heartbeat before the upload, which reports no progress of its own
            stored = store.put_stream(f"exports/{job_id}/{uuid.uuid4().hex}", out, size,
                                      KINDS[job.kind].content_type, MAX_RESULT_BYTES)
    except Exception as exc:  # noqa: BLE001 - any failure ends the job as failed, with the reason recorded
        log.exception("export job %s failed", job_id)
        report.write(status="failed", error=(f"{type(exc).__name__}: {exc}")[:4000], finished_at=utcnow())
        return "failed"
    report.write(status="done", bucket=stored.bucket, key=stored.key, version_id=stored.version_id,
                 size=stored.size, sha256=stored.sha256, finished_at=utcnow())
    return "done"
