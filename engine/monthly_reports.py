"""Monthly operation reports (月度运营报告, seed 001 §十(三)2): the supplier's PM submits each month's report to the
third party within 10 working days after the month; the third party accepts it or returns it with comments, and
the PM revises it within 10 working days. Both sides find what waits for them in their inbox, with the due date."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, BinaryIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import audit, text
from engine.access import authorize
from engine.calendar import TZ
from engine.errors import Conflict, FormInvalid, NotFound, PayloadTooLarge, ServiceUnavailable, UnsupportedMedia
from engine.evidence import safe_filename
from engine.workflow import Ctx, work_calendar
from storage.artefact_store import ArtefactStore, StoreUnavailable, TooLarge
from storage.models import Contract, MonthlyReport
from storage.sniff import UnsupportedType, sniff

PREFIX = "monthly-reports/"
DUE_WORKING_DAYS = 10       # to submit, after the month ends
REVISION_WORKING_DAYS = 10  # to revise, after a return


def month_start(d: date) -> date:
    return d.replace(day=1)


def next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def report_deadline(session: Session, month: date) -> datetime:
    """End of the 10th working day after the month's last day."""
    last_day = next_month(month) - timedelta(days=1)
    start = datetime.combine(last_day, time(12, 0), TZ)
    return work_calendar(session).add_working_days(start, DUE_WORKING_DAYS, end_of_day=time(23, 59, 59)).due_at


@dataclass(frozen=True)
class ReportStep:
    """A monthly report that waits for someone: to be written (PM), revised (PM) or reviewed (third party)."""

    contract: str
    month: date
    step: str  # submit | revise | review
    title: str
    due_at: datetime | None
    report_id: int | None


def _months(contract: Contract, today: date) -> list[date]:
    if contract.period_start is None:
        return []
    first = month_start(contract.period_start)
    end = month_start(min(today, contract.period_end) if contract.period_end else today)
    months = []
    m = first
    while m < end:  # only months that have ended
        months.append(m)
        m = next_month(m)
    return months


def report_steps(session: Session, user: Any, now: datetime | None = None) -> list[ReportStep]:
    """What waits for this user: the PM the months without a report and the returned ones; the third party the
    submitted ones. Oldest first."""
    now = now or datetime.now(UTC)
    steps: list[ReportStep] = []
    from engine.policy import may

    if may(user, "report.submit"):
        today = now.astimezone(TZ).date()
        done = {(r.contract_id, r.month): r for r in session.scalars(select(MonthlyReport))}
        for contract in session.scalars(select(Contract).order_by(Contract.code)):
            for month in _months(contract, today)[-12:]:
                report = done.get((contract.id, month))
                if report is None:
                    steps.append(ReportStep(contract.code, month, "submit", "提交月度运营报告",
                                            report_deadline(session, month), None))
                elif report.status == "returned":
                    steps.append(ReportStep(contract.code, month, "revise", "修改月度运营报告",
                                            report.revision_due_at, report.id))
    if may(user, "report.review"):
        for report in session.scalars(select(MonthlyReport).where(MonthlyReport.status == "submitted")
                                      .order_by(MonthlyReport.month, MonthlyReport.id)):
            steps.append(ReportStep(report.contract.code, report.month, "review", "审核月度运营报告", None,
                                    report.id))
    return steps


def load_report(session: Session, user: Any, report_id: int) -> MonthlyReport:
    authorize(user, "report.read")
    report = session.get(MonthlyReport, report_id)
    if report is None:
        raise NotFound(f"monthly report {report_id} not found")
    return report


def submit_report(ctx: Ctx, store: ArtefactStore | None, contract_code: str, month: date, filename: str | None,
                  stream: BinaryIO, length: int, max_bytes: int) -> MonthlyReport:
    """Submit a month's report, or resubmit a returned one (a new round with the new file)."""
    assert ctx.user is not None
    authorize(ctx.user, "report.submit")
    contract = ctx.session.execute(select(Contract).where(Contract.code == contract_code)).scalar()
    if contract is None:
        raise FormInvalid({"contract": [f"unknown contract {contract_code!r}"]})
    month = month_start(month)
    if month >= month_start(ctx.now.astimezone(TZ).date()):
        raise FormInvalid({"month": ["the month has not ended yet"]})
    existing = ctx.session.execute(select(MonthlyReport).where(MonthlyReport.contract_id == contract.id,
                                                               MonthlyReport.month == month)).scalar()
    if existing is not None and existing.status != "returned":
        raise Conflict(f"the report for {month:%Y-%m} is already {existing.status}", code="report_exists")
    if store is None:
        raise ServiceUnavailable("no evidence store is configured")
    if length <= 0:
        raise FormInvalid({"file": ["the report file is required"]})
    if length > max_bytes:
        raise PayloadTooLarge(f"the file is larger than {max_bytes} bytes")
    try:
        sniffed = sniff(stream, filename or "")
    except UnsupportedType as exc:
        raise UnsupportedMedia(exc.reason) from exc
    try:
        stored = store.put_stream(f"{PREFIX}{contract.code}/{month:%Y-%m}/{uuid.uuid4().hex}", stream, length,
                                  sniffed.media_type, max_bytes)
    except TooLarge as exc:
        raise PayloadTooLarge(f"the file is larger than {max_bytes} bytes") from exc
    except StoreUnavailable as exc:
        raise ServiceUnavailable("the object store is unavailable") from exc
    fields = {"filename": safe_filename(filename, sniffed.extension), "bucket": stored.bucket, "key": stored.key,
              "version_id": stored.version_id, "sha256": stored.sha256, "size": stored.size,
              "media_type": sniffed.media_type, "submitted_by_id": ctx.user.id, "submitted_at": ctx.now,
              "status": "submitted"}
    if existing is None:
        report = MonthlyReport(contract_id=contract.id, month=month, round=1,
                               due_at=report_deadline(ctx.session, month), **fields)
        ctx.session.add(report)
        ctx.session.flush()
    else:
        done = ctx.session.execute(update(MonthlyReport).where(MonthlyReport.id == existing.id,
                                                               MonthlyReport.status == "returned")
                                   .values(round=existing.round + 1, **fields)
                                   .execution_options(synchronize_session=False))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("the report changed meanwhile", code="report_exists")
        ctx.session.refresh(existing)
        report = existing
    audit.record(ctx.session, ctx.actor, "report.submitted", target_type="monthly_report", target_id=report.id,
                 contract=contract.code, month=f"{month:%Y-%m}", round=report.round, sha256=stored.sha256,
                 key=stored.key, version_id=stored.version_id,
                 late=bool(report.due_at and ctx.now > report.due_at.replace(tzinfo=report.due_at.tzinfo or UTC)))
    return report


def review_report(ctx: Ctx, report_id: int, decision: str, comment: str | None) -> MonthlyReport:
    """The third party accepts a submitted report, or returns it with comments (revise within 10 working days)."""
    assert ctx.user is not None
    authorize(ctx.user, "report.review")
    report = load_report(ctx.session, ctx.user, report_id)
    note = (comment or "").strip()
    if decision not in ("accept", "return"):
        raise FormInvalid({"decision": ["accept or return"]})
    if decision == "return" and len(note) < 2:
        raise FormInvalid({"comment": ["退回时必须填写审核意见"]})
    if len(note) > 4000 or text.unstorable(note):
        raise FormInvalid({"comment": ["at most 4000 characters of text"]})
    values: dict[str, Any] = {"status": "accepted" if decision == "accept" else "returned",
                              "reviewed_by_id": ctx.user.id, "reviewed_at": ctx.now, "comment": note or None}
    if decision == "return":
        values["revision_due_at"] = work_calendar(ctx.session).add_working_days(
            ctx.now, REVISION_WORKING_DAYS).due_at
    done = ctx.session.execute(update(MonthlyReport).where(MonthlyReport.id == report.id,
                                                           MonthlyReport.status == "submitted")
                               .values(**values).execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"monthly report {report.id} is not waiting for review", code="report_not_submitted")
    ctx.session.refresh(report)
    audit.record(ctx.session, ctx.actor, "report.reviewed", target_type="monthly_report", target_id=report.id,
                 decision=decision, comment=note or None)
    return report
