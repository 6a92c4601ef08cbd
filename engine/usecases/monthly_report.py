"""月度运营报告 (monthly operations report), seed 001 §十(三) 2): one per month of the service period.

Each month of the service period has a report row on `contract_tasks` (kind "monthly_report", key "YYYY-MM"):
its period, due moment, status (open → submitted → returned → submitted … → accepted), the PM's narrative and
attachments, the auditor's reviews, lateness and deduction. Once the month has ended, the report runs as a work
item of the contract (no service line, no department; `open_month`) on bpmn/monthly_report.bpmn: the PM's
step 编写并提交月度运营报告 in the PM's inbox, then the third party's review, returned to the PM until accepted.
The steps are ordinary tasks (claim, hand over, complete through the task API or page); completing them runs
this module's hooks in the same unit of work, so the report row and the process never disagree. The item
creates no workload entry. The tick (api/background.py) opens each month's item once the month is over;
submitting or reviewing a report opens it too if the tick has not yet.

- Due: the end of the 10th working day after the month (`monthly_report_working_days`).
- Drafted from ItemGate's own data (`draft`): items received, progressed, completed and overdue per service
  line and department; the month's workload (the fee tallied for work of that month); targets' progress;
  open returns; the on-time rate. As XLSX and PDF.
- Revision: the seed asks for the revised report "自提交之日起的10个工作日内" — within 10 working days of the
  submission; a resubmission after that is late too.
- Late: 3 % (`monthly_report_late_rate`) of that month's fee, recorded on the report and taken as a deduction
  by the stage claim whose period covers the month (engine/usecases/settlement.py, month_deductions). Recorded once.
- Evidence: each submission stores the report as drafted at that moment (XLSX, and PDF where a Chinese font is
  installed) in the object store with its SHA-256 (`data.submissions`); downloads of a submitted report serve
  those files, checked against their hashes — what the auditor reviewed, not a re-draft from today's data.
"""
from __future__ import annotations

import hashlib
import io
import tempfile
import uuid
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.contract import schedule
from engine.contract.calendar import TZ
from engine.errors import Conflict, Forbidden, Invalid, NotFound, ObjectMissing, ServiceUnavailable
from engine.evidence.pdf import CjkFont
from engine.money import performance
from engine.money.reports import WorkloadFilter, _Book, progress
from engine.trust import audit, policy
from engine.usecases import tasks
from engine.usecases.tasks import Ctx, work_calendar
from storage.models import (
    LINE_WORK,
    Contract,
    ContractTask,
    Department,
    HumanTask,
    ServiceLine,
    WorkItem,
    WorkloadEntry,
)

KIND = "monthly_report"
PROCESS_ID = "monthly_report"     # bpmn/monthly_report.bpmn: PM prepares and submits, the third party reviews
PREPARE_FORM, REVIEW_FORM = "monthly_report", "report_review"
DUE_VARIABLE = "report_due"       # the model's prepare step is due at this moment (its `due_at_var`)
STATUS_NAMES = {"open": "待提交", "submitted": "第三方审核中", "returned": "退回修改", "accepted": "已通过"}
CENT = Decimal("0.01")


def months_of(contract: Contract) -> list[tuple[str, date, date]]:
    """(key, first day, last day) of each month of the service period."""
    if contract.period_start is None or contract.period_end is None:
        return []
    out = []
    start = contract.period_start
    i = 0
    while True:
        m_start = schedule.add_months(start, i)
        if m_start > contract.period_end:
            break
        m_end = min(schedule.add_months(start, i + 1) - timedelta(days=1), contract.period_end)
        out.append((f"{m_start:%Y-%m}", m_start, m_end))
        i += 1
    return out


def ensure_reports(session: Session, contract: Contract) -> list[ContractTask]:
    """One report row per month of the service period (created once; idempotent). Its work item is opened when
    the month has ended (`open_month`)."""
    settings = contract.settings or {}
    if settings.get("monthly_report_working_days") is None:
        return []
    days = int(settings["monthly_report_working_days"])
    existing = {t.key: t for t in session.scalars(select(ContractTask).where(
        ContractTask.contract_id == contract.id, ContractTask.kind == KIND))}
    calendar = work_calendar(session)
    created = False
    for key, m_start, m_end in months_of(contract):
        if key in existing:
            continue
        due, _ = schedule.working_deadline(calendar, schedule.after_day(m_end), days)
        now = datetime.now(TZ)
        session.add(ContractTask(contract_id=contract.id, kind=KIND, key=key, title=f"{key} 月度运营报告",
                                 period_start=m_start, period_end=m_end, status="open", due_at=due, late=False,
                                 data={}, created_at=now, updated_at=now))
        created = True
    if created:
        session.flush()
    return list(session.scalars(select(ContractTask).where(
        ContractTask.contract_id == contract.id, ContractTask.kind == KIND).order_by(ContractTask.period_start)))


def load(session: Session, report_id: int) -> ContractTask:
    report = session.get(ContractTask, report_id)
    if report is None or report.kind != KIND:
        raise NotFound(f"monthly report {report_id} not found")
    return report


def report_of(session: Session, item: WorkItem) -> ContractTask:
    report = session.scalars(select(ContractTask).where(ContractTask.item_id == item.id)).first()
    if report is None:
        raise NotFound(f"work item {item.id} is no monthly report")
    return report


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(TZ).isoformat() if at is not None else None


def month_over(report: ContractTask, now: datetime) -> bool:
    return report.period_end is not None and report.period_end < now.astimezone(TZ).date()


# Where an adopted report's process is put, by the row's status: the steps replayed before its tasks open.
_REPLAY: dict[str, list[dict[str, Any]]] = {
    "open": [], "submitted": [{}], "returned": [{}, {"decision": "return"}],
    "accepted": [{}, {"decision": "approve"}],
}


def open_month(ctx: Ctx, report: ContractTask) -> WorkItem | None:
    """The report's work item, started on the monthly report process once its month is over (None before that).
    Idempotent under concurrency: the report row is locked (PostgreSQL) and read again. A row in a later state
    (a report submitted, returned or accepted before reports ran as work items) gets its process in that state."""
    return _opened(ctx, report)[0]


def _opened(ctx: Ctx, report: ContractTask) -> tuple[WorkItem | None, bool]:
    """(the report's item or None, whether this call created it)."""
    if report.item_id is not None:
        return ctx.session.get(WorkItem, report.item_id), False
    if not month_over(report, ctx.now):
        return None, False
    query = select(ContractTask).where(ContractTask.id == report.id)
    if ctx.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    # Fetched, not only executed: the row is refreshed as the lock returns it.
    ctx.session.scalars(query.execution_options(populate_existing=True)).one()
    if report.item_id is not None:  # another host opened it while this one waited for the row
        return ctx.session.get(WorkItem, report.item_id), False
    contract = ctx.session.get(Contract, report.contract_id)
    assert contract is not None
    item = WorkItem(contract_id=contract.id, service_line_id=None, department_id=None, code=f"MR-{report.key}",
                    name=report.title, channels=[], mode="report", difficulty=Decimal("1.00"),
                    attributes={}, status="active", created_by_id=None, created_at=ctx.now, period=report.key)
    item.contract = contract
    replay = [dict(step, comment=_last_comment(report)) if step.get("decision") == "return" else step
              for step in _REPLAY.get(report.status, [])]
    due = report.revision_due_at if report.status == "returned" else report.due_at
    start: dict[str, Any] = {"contract": contract.code, "month": report.key, DUE_VARIABLE: _iso(due),
                             "mode": item.mode, "channels": []}
    tasks.start_process(ctx, item, tasks.current_definition(ctx.session, PROCESS_ID), start, replay,
                        return_comment=_last_comment(report) if report.status == "returned" else None)
    if report.status == "accepted":
        item.status, item.stage = "completed", "done"
        item.completed_at = report.updated_at
    report.item_id = item.id
    ctx.session.flush()
    audit.record(ctx.session, ctx.actor, "item.created", target_type="item", target_id=item.id, code=item.code,
                 monthly_report=report.id, month=report.key, status=report.status)
    return item, True


def _last_comment(report: ContractTask) -> str | None:
    reviews = (report.data or {}).get("reviews") or []
    return reviews[-1].get("comment") if reviews else None


def _unopened(now: datetime) -> Any:
    """Reports whose month has ended and whose work item is not open yet."""
    return select(ContractTask).where(ContractTask.kind == KIND, ContractTask.item_id.is_(None),
                                      ContractTask.period_end < now.astimezone(TZ).date())


def contracts_to_open(session: Session, now: datetime) -> list[int]:
    """The contracts with a report to open (`open_ended`), in id order."""
    return list(session.scalars(_unopened(now).with_only_columns(ContractTask.contract_id).distinct()
                                .order_by(ContractTask.contract_id)))


def open_ended(ctx: Ctx, contract_id: int | None = None) -> int:
    """Open the work item of every report whose month has ended (the tick runs this); returns how many."""
    query = _unopened(ctx.now)
    if contract_id is not None:
        query = query.where(ContractTask.contract_id == contract_id)
    opened = 0
    for report in ctx.session.scalars(query.order_by(ContractTask.period_start, ContractTask.id)).all():
        opened += _opened(ctx, report)[1]
    return opened


def _open_task(ctx: Ctx, report: ContractTask, form: str) -> HumanTask:
    """The report's open step with `form`; 409 report_wrong_stage when the report is not at that step."""
    item = open_month(ctx, report)
    if item is None:
        raise Conflict(f"the month {report.key} is not over yet: its report is due after it",
                       code="month_not_over", status_now=report.status)
    task = ctx.session.scalars(select(HumanTask).where(HumanTask.item_id == item.id, HumanTask.status == "ready",
                                                       HumanTask.form == form)).first()
    if task is None:
        raise Conflict("the report is not at that step", code="report_wrong_stage", status_now=report.status)
    return task


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time(0), TZ), datetime.combine(end + timedelta(days=1), time(0), TZ)


def month_fee(session: Session, contract_id: int, start: date, end: date) -> Decimal:
    """The fee tallied for work of the month: the amounts of live items' entries tallied within it."""
    lo, hi = _bounds(start, end)
    total = session.execute(select(func.coalesce(func.sum(WorkloadEntry.amount), 0))
                            .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
                            .where(WorkloadEntry.contract_id == contract_id, WorkItem.status != "cancelled",
                                   WorkloadEntry.tallied_at >= lo, WorkloadEntry.tallied_at < hi)).scalar()
    return Decimal(total or 0).quantize(CENT)


def draft(session: Session, report: ContractTask, now: datetime) -> dict[str, Any]:
    """The report's figures from ItemGate's data for its month."""
    contract = session.get(Contract, report.contract_id)
    assert contract is not None and report.period_start is not None and report.period_end is not None
    start, end = report.period_start, report.period_end
    lo, hi = _bounds(start, end)
    lines = {sl.id: sl for sl in session.scalars(select(ServiceLine).where(ServiceLine.contract_id == contract.id))}
    depts = dict(session.execute(select(Department.id, Department.code)).all())
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {
        "received": 0, "progressed": 0, "completed": 0, "overdue": 0, "entries": 0, "amount": Decimal("0.00")})

    def key(line_id: int | None, dept_id: int | None) -> tuple[str, str]:
        line = lines.get(line_id) if line_id is not None else None
        return line.code if line else "?", depts.get(dept_id, "?") if dept_id is not None else "?"

    for line_id, dept_id, created, completed in session.execute(
            select(WorkItem.service_line_id, WorkItem.department_id, WorkItem.created_at, WorkItem.completed_at)
            .where(WorkItem.contract_id == contract.id, WorkItem.status != "cancelled",
                   LINE_WORK)):
        if lo <= created < hi:
            rows[key(line_id, dept_id)]["received"] += 1
        if completed is not None and lo <= completed < hi:
            rows[key(line_id, dept_id)]["completed"] += 1
    month_end = min(hi, now)
    for line_id, dept_id, t_completed, due, status in session.execute(
            select(WorkItem.service_line_id, WorkItem.department_id, HumanTask.completed_at, HumanTask.due_at,
                   HumanTask.status)
            .join(WorkItem, WorkItem.id == HumanTask.item_id)
            .where(WorkItem.contract_id == contract.id, LINE_WORK)):
        if t_completed is not None and lo <= t_completed < hi:
            rows[key(line_id, dept_id)]["progressed"] += 1
        late_done = t_completed is not None and lo <= t_completed < hi and due is not None and t_completed > due
        open_late = (t_completed is None and status == "ready" and due is not None and lo <= due < month_end)
        if late_done or open_late:
            rows[key(line_id, dept_id)]["overdue"] += 1
    for line_id, dept_id, amount in session.execute(
            select(WorkloadEntry.service_line_id, WorkloadEntry.department_id, WorkloadEntry.amount)
            .join(WorkItem, WorkItem.id == WorkloadEntry.item_id)
            .where(WorkloadEntry.contract_id == contract.id, WorkItem.status != "cancelled",
                   WorkloadEntry.tallied_at >= lo, WorkloadEntry.tallied_at < hi)):
        r = rows[key(line_id, dept_id)]
        r["entries"] += 1
        r["amount"] += Decimal(amount)
    open_returns = session.execute(select(func.count(HumanTask.id)).join(WorkItem, WorkItem.id == HumanTask.item_id)
                                   .where(WorkItem.contract_id == contract.id, HumanTask.status == "ready",
                                          LINE_WORK,
                                          HumanTask.return_comment.is_not(None))).scalar()
    fee = month_fee(session, contract.id, start, end)
    total = {k: sum(r[k] for r in rows.values()) for k in ("received", "progressed", "completed", "overdue",
                                                          "entries")}
    rates = performance.on_time_rates(session, contract, start, end, "department", now)
    counted = sum(r["on_time"] + r["overdue"] for r in rates)
    on_time = sum(r["on_time"] for r in rates)
    return {
        "month": report.key, "period_start": start.isoformat(), "period_end": end.isoformat(),
        "contract": contract.code, "month_fee": float(fee), "totals": total, "open_returns": int(open_returns or 0),
        "on_time_rate": None if counted == 0 else round(on_time / counted, 4), "on_time_by_department": rates,
        "rows": [{"service_line": k[0], "department": k[1], **{n: (float(v) if isinstance(v, Decimal) else v)
                                                               for n, v in r.items()}}
                 for k, r in sorted(rows.items())],
        "progress": progress(session, WorkloadFilter(contract=contract.code, date_to=end)),
    }


# ---------------------------------------------------------------- use cases

def _require(ctx: Ctx, action: str) -> None:
    if ctx.user is None or not policy.may(ctx.user, action):
        raise Forbidden(f"your role may not {policy.RULES[action].summary}", code="not_your_task")


def write(ctx: Ctx, report: ContractTask, narrative: str) -> ContractTask:
    """The PM writes (or rewrites) the narrative while the report is open or returned."""
    _require(ctx, "report.prepare")
    if report.status not in ("open", "returned"):
        raise Conflict("the report is with the auditor or accepted", code="report_wrong_stage",
                       status_now=report.status)
    report.narrative = narrative
    report.updated_at = ctx.now
    audit.record(ctx.session, ctx.actor, "monthly_report.written", target_type="monthly_report",
                 target_id=report.id, month=report.key, chars=len(narrative))
    return report


def attach(ctx: Ctx, report: ContractTask, filename: str, body: bytes, media_type: str) -> dict[str, Any]:
    """The PM attaches a file (stored in the evidence store, versioned); listed on the report."""
    _require(ctx, "report.prepare")
    if report.status not in ("open", "returned"):
        raise Conflict("the report is with the auditor or accepted", code="report_wrong_stage",
                       status_now=report.status)
    if ctx.store is None:
        from engine.errors import ServiceUnavailable

        raise ServiceUnavailable("the evidence store is not configured")
    import hashlib
    import uuid

    contract = ctx.session.get(Contract, report.contract_id)
    assert contract is not None
    key = f"{contract.code}/monthly-reports/{report.key}/{uuid.uuid4().hex}"
    stored = ctx.store.put_stream(key, io.BytesIO(body), len(body), media_type, 64 << 20)
    entry = {"filename": filename[:200], "key": stored.key, "version_id": stored.version_id,
             "sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "at": ctx.now.isoformat(),
             "by": ctx.user.username if ctx.user else None}
    data = dict(report.data or {})
    data["attachments"] = [*data.get("attachments", []), entry]
    report.data = data
    report.updated_at = ctx.now
    audit.record(ctx.session, ctx.actor, "monthly_report.attached", target_type="monthly_report",
                 target_id=report.id, month=report.key, filename=entry["filename"], sha256=entry["sha256"])
    return entry


def _mark_late(ctx: Ctx, report: ContractTask, why: str) -> None:
    if report.late:
        return
    contract = ctx.session.get(Contract, report.contract_id)
    assert contract is not None and report.period_start is not None and report.period_end is not None
    settings = contract.settings or {}
    rate = Decimal(str(settings.get("monthly_report_late_rate", "0.03")))
    fee = month_fee(ctx.session, contract.id, report.period_start, report.period_end)
    deduction = (fee * rate).quantize(CENT)
    report.late = True
    report.data = dict(report.data or {}, month_fee=str(fee), rate=str(rate), deduction=str(deduction), late_why=why)
    audit.record(ctx.session, ctx.actor, "monthly_report.late", target_type="monthly_report", target_id=report.id,
                 month=report.key, month_fee=str(fee), rate=str(rate), deduction=str(deduction), why=why)


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FILE_TYPES = {"xlsx": XLSX_TYPE, "pdf": "application/pdf"}
MAX_FILE = 64 << 20


def _store_submission(ctx: Ctx, report: ContractTask, font: CjkFont | None) -> dict[str, Any]:
    """Keep the report as submitted: its drafted XLSX (and PDF, given a font) in the object store, hashed."""
    if ctx.store is None:
        raise ServiceUnavailable("the evidence store is not configured; a report's submission keeps its files there")
    contract = ctx.session.get(Contract, report.contract_id)
    assert contract is not None
    figures = draft(ctx.session, report, ctx.now)
    with xlsx_file(report, figures) as book:
        bodies = {"xlsx": book.read()}
    if font is not None:
        bodies["pdf"] = pdf_bytes(report, figures, font)
    subs = list((report.data or {}).get("submissions", []))
    files: dict[str, Any] = {}
    for fmt, body in bodies.items():
        key = f"{contract.code}/monthly-reports/{report.key}/submitted/{uuid.uuid4().hex}.{fmt}"
        stored = ctx.store.put_stream(key, io.BytesIO(body), len(body), FILE_TYPES[fmt], MAX_FILE)
        files[fmt] = {"key": stored.key, "version_id": stored.version_id, "sha256": stored.sha256,
                      "size": stored.size}
    entry = {"round": len(subs) + 1, "at": ctx.now.isoformat(), "by": ctx.user.username if ctx.user else None,
             "files": files, "rows": len(figures["rows"])}
    report.data = dict(report.data or {}, submissions=[*subs, entry])
    return entry


def font_if_installed(configured: str | None) -> CjkFont | None:
    """The Chinese font for the submission's PDF, or None where none is installed (the XLSX is kept alone)."""
    from engine.evidence.pdf import FontMissing, find_cjk_font

    try:
        return find_cjk_font(configured)
    except FontMissing:
        return None


def submitted_file(store: Any, report: ContractTask, fmt: str, round_no: int | None = None) -> bytes | None:
    """The bytes of a submission's stored file (the latest submission unless `round_no`), checked against the
    hash recorded when it was stored; None when the report was never submitted with that file."""
    subs = (report.data or {}).get("submissions") or []
    entry = subs[-1] if subs and round_no is None else next((e for e in subs if e["round"] == round_no), None)
    if entry is None or fmt not in entry["files"]:
        return None
    if store is None:
        raise ServiceUnavailable("the evidence store is not configured")
    f = entry["files"][fmt]
    body = store.read_small(f["key"], f["version_id"], limit=MAX_FILE)
    if len(body) != f["size"] or hashlib.sha256(body).hexdigest() != f["sha256"]:
        raise ObjectMissing(f"the stored {fmt} of report {report.key} (round {entry['round']}) is not what was "
                            "stored", key=f["key"])
    return bytes(body)


def report_file(session: Session, store: Any, report: ContractTask, fmt: str, configured_font: str | None,
                now: datetime, round_no: int | None = None, draft_now: bool = False) -> tuple[bytes, int | None]:
    """A report's file and how many rows it holds: once submitted, the stored file of the latest submission (or
    of `round_no`), hash-checked — what the auditor reviewed; before that, or with `draft_now`, drafted from
    today's data (a PDF needs the Chinese font: 503 cjk_font_missing without one)."""
    from engine.evidence.pdf import find_cjk_font

    if fmt not in FILE_TYPES:
        raise NotFound(f"no {fmt} file for a monthly report")
    if not draft_now:
        stored = submitted_file(store, report, fmt, round_no)
        if stored is not None:
            subs = (report.data or {}).get("submissions") or []
            entry = subs[-1] if round_no is None else next(e for e in subs if e["round"] == round_no)
            return stored, entry.get("rows")
    figures = draft(session, report, now)
    if fmt == "xlsx":
        with xlsx_file(report, figures) as book:
            return book.read(), len(figures["rows"])
    return pdf_bytes(report, figures, find_cjk_font(configured_font)), len(figures["rows"])


def submit(ctx: Ctx, report: ContractTask, narrative: str | None = None) -> ContractTask:
    """The PM submits (or resubmits) the report to the auditor: completes the report's PM step (the hook below
    does the rest in the same unit of work)."""
    _require(ctx, "report.prepare")
    _prepare_checks(report, narrative)
    task = _open_task(ctx, report, PREPARE_FORM)
    tasks.complete_task(ctx, task.id, {} if narrative is None else {"narrative": narrative})
    return report


def review(ctx: Ctx, report: ContractTask, decision: str, comment: str | None) -> ContractTask:
    """The auditor accepts the report or returns it with comments: completes the report's review step."""
    _require(ctx, "report.review")
    if report.status != "submitted":
        raise Conflict("the report is not waiting for review", code="report_wrong_stage", status_now=report.status)
    if decision not in ("accept", "return"):
        raise Invalid("decision must be accept or return", code="invalid_decision")
    if decision == "return" and not (comment or "").strip():
        raise Invalid("returning needs a comment", code="comment_required")
    task = _open_task(ctx, report, REVIEW_FORM)
    tasks.complete_task(ctx, task.id, {"decision": "approve" if decision == "accept" else "return",
                                       "comment": comment})
    return report


def _prepare_checks(report: ContractTask, narrative: str | None) -> None:
    if report.status not in ("open", "returned"):
        raise Conflict("the report is already with the auditor or accepted", code="report_wrong_stage",
                       status_now=report.status)
    if not (narrative if narrative is not None else report.narrative or "").strip():
        raise Invalid("write the report's narrative first", code="narrative_required")


def _submitted(ctx: Ctx, task: HumanTask, item: WorkItem, clean: dict[str, Any]) -> None:
    """Hook of the PM's step (tasks.COMPLETION_HOOKS): the narrative, lateness against the clocks, and the
    report as drafted now kept as the submission's evidence (XLSX; PDF where a Chinese font is installed)."""
    report = report_of(ctx.session, item)
    _require(ctx, "report.prepare")
    narrative = clean.get("narrative")
    _prepare_checks(report, narrative)
    if narrative is not None:
        write(ctx, report, narrative)
    first = report.submitted_at is None
    if first and report.due_at is not None and ctx.now > report.due_at:
        _mark_late(ctx, report, "submitted after the due date")
    if not first and report.revision_due_at is not None and ctx.now > report.revision_due_at:
        _mark_late(ctx, report, "revised after the revision due date")
    if first:
        report.submitted_at = ctx.now
        contract = ctx.session.get(Contract, report.contract_id)
        days = int((contract.settings or {}).get("monthly_report_working_days", 10)) if contract else 10
        # Seed 001: revisions within 10 working days of the submission (自提交之日起的10个工作日内).
        report.revision_due_at, _ = schedule.working_deadline(work_calendar(ctx.session), ctx.now, days)
    # A revision is due at the revision deadline: the process carries it to the PM's next round.
    clean[DUE_VARIABLE] = _iso(report.revision_due_at)
    report.status = "submitted"
    report.updated_at = ctx.now
    entry = _store_submission(ctx, report, font_if_installed(ctx.cjk_font))
    audit.record(ctx.session, ctx.actor, "monthly_report.submitted", target_type="monthly_report",
                 target_id=report.id, month=report.key, late=report.late, round=entry["round"],
                 files={fmt: f["sha256"] for fmt, f in entry["files"].items()})


def _reviewed(ctx: Ctx, task: HumanTask, item: WorkItem, clean: dict[str, Any]) -> None:
    """Hook of the third party's step: the review recorded on the report, its status following the decision."""
    report = report_of(ctx.session, item)
    _require(ctx, "report.review")
    if report.status != "submitted":
        raise Conflict("the report is not waiting for review", code="report_wrong_stage", status_now=report.status)
    decision = "accept" if clean["decision"] == "approve" else "return"
    comment = clean.get("comment")
    report.status = "accepted" if decision == "accept" else "returned"
    data = dict(report.data or {})
    data["reviews"] = [*data.get("reviews", []), {"decision": decision, "comment": comment,
                                                  "by": ctx.user.username if ctx.user else None,
                                                  "at": ctx.now.isoformat()}]
    report.data = data
    report.updated_at = ctx.now
    audit.record(ctx.session, ctx.actor, f"monthly_report.{decision}", target_type="monthly_report",
                 target_id=report.id, month=report.key, comment=comment)


tasks.COMPLETION_HOOKS[PREPARE_FORM] = _submitted
tasks.COMPLETION_HOOKS[REVIEW_FORM] = _reviewed


def report_json(report: ContractTask, now: datetime) -> dict[str, Any]:
    from engine.usecases.settlement import clock_state

    data = report.data or {}
    return {"id": report.id, "item_id": report.item_id, "month": report.key, "title": report.title,
            "status": report.status,
            "status_name": STATUS_NAMES.get(report.status), "period_start": report.period_start.isoformat()
            if report.period_start else None, "period_end": report.period_end.isoformat()
            if report.period_end else None, "due_at": report.due_at, "submitted_at": report.submitted_at,
            "revision_due_at": report.revision_due_at, "late": report.late,
            "clock": clock_state(report.due_at, report.submitted_at, now),
            "month_fee": data.get("month_fee"), "deduction_rate": data.get("rate"),
            "deduction": data.get("deduction"), "narrative": report.narrative,
            "attachments": [{k: a[k] for k in ("filename", "sha256", "size", "at", "by")}
                            for a in data.get("attachments", [])],
            "reviews": data.get("reviews", []),
            "submissions": [{"round": e["round"], "at": e["at"], "by": e["by"],
                             "files": {fmt: {"sha256": f["sha256"], "size": f["size"]}
                                       for fmt, f in e["files"].items()}}
                            for e in data.get("submissions", [])]}


# ---------------------------------------------------------------- files

def xlsx_file(report: ContractTask, figures: dict[str, Any]) -> tempfile.SpooledTemporaryFile[bytes]:
    book = _Book()
    head = book.book.add_worksheet("概况")
    facts: list[tuple[str, Any]] = [
        ("合同", figures["contract"]), ("月份", figures["month"]),
        ("期间", f"{figures['period_start']} 至 {figures['period_end']}"),
        ("本月受理事项", figures["totals"]["received"]), ("本月推进环节", figures["totals"]["progressed"]),
        ("本月完成事项", figures["totals"]["completed"]), ("本月超时环节", figures["totals"]["overdue"]),
        ("本月计量分录", figures["totals"]["entries"]), ("本月结算费用（元）", figures["month_fee"]),
        ("未处理退回", figures["open_returns"]),
        ("按时处理率", "—" if figures["on_time_rate"] is None else figures["on_time_rate"]),
        ("提交截止", report.due_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if report.due_at else "—"),
        ("是否逾期", "是" if report.late else "否"),
        ("逾期扣款（元）", (report.data or {}).get("deduction") or 0),
    ]
    for r, (label, value) in enumerate(facts):
        head.write(r, 0, label, book.bold)
        head.write(r, 1, value)
    head.write(len(facts) + 1, 0, "运营情况说明", book.bold)
    head.write(len(facts) + 1, 1, report.narrative or "")
    head.set_column(0, 0, 18)
    head.set_column(1, 1, 60)
    detail = book.book.add_worksheet("按服务类别与部门")
    cols = ["服务类别", "需求部门", "受理", "推进", "完成", "超时", "计量分录", "金额（元）"]
    detail.write_row(0, 0, cols, book.bold)
    for r, row in enumerate(figures["rows"], start=1):
        detail.write_row(r, 0, [row["service_line"], row["department"], row["received"], row["progressed"],
                                row["completed"], row["overdue"], row["entries"]])
        detail.write_number(r, 7, row["amount"], book.money)
    rates = book.book.add_worksheet("按时处理率")
    rates.write_row(0, 0, ["部门", "环节数", "按时", "超时", "按时处理率"], book.bold)
    for r, row in enumerate(figures["on_time_by_department"], start=1):
        rates.write_row(r, 0, [row["key"], row["tasks"], row["on_time"], row["overdue"],
                               "—" if row["rate"] is None else row["rate"]])
    prog = book.book.add_worksheet("目标进度")
    prog.write_row(0, 0, ["服务类别", "指标", "累计完成", "预估量/目标", "完成率"], book.bold)
    for r, row in enumerate(figures["progress"], start=1):
        prog.write_row(r, 0, [row["service_line"], row["label"], row["completed"], row["target"] or "—",
                              "—" if row["ratio"] is None else row["ratio"]])
    return book.close()


def pdf_bytes(report: ContractTask, figures: dict[str, Any], font: CjkFont) -> bytes:
    """The report as a PDF (engine/evidence/pdf.py: fpdf2 with the CJK font embedded): the facts of the
    XLSX's 概况 sheet,
    the narrative, and the figures per service line and department, on-time rates and targets' progress."""
    from fpdf.enums import Align

    from engine.evidence.pdf import CjkPdf

    t = figures["totals"]
    rate = figures["on_time_rate"]
    deduction = (report.data or {}).get("deduction")
    pdf = CjkPdf(font, f"{figures['contract']} {figures['month']} 月度运营报告")
    pdf.add_page()
    pdf.heading(f"{figures['contract']} 月度运营报告（{figures['month']}）", 16, Align.C)
    pdf.paragraph(f"期间：{figures['period_start']} 至 {figures['period_end']}", 10, align=Align.C)
    pdf.ln(3)
    due = report.due_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if report.due_at else "—"
    pdf.grid([["本月受理事项", t["received"], "本月完成事项", t["completed"]],
              ["本月推进环节", t["progressed"], "本月超时环节", t["overdue"]],
              ["本月计量分录", t["entries"], "本月结算费用（元）", f"{figures['month_fee']:,.2f}"],
              ["未处理退回", figures["open_returns"], "按时处理率", "—" if rate is None else f"{rate:.2%}"],
              ["提交截止", due, "是否逾期", "是" if report.late else "否"],
              ["状态", STATUS_NAMES.get(report.status, report.status), "逾期扣款（元）",
               f"{Decimal(str(deduction or 0)):,.2f}"]],
             (3, 2, 3, 2), header=False, align="LRLR")
    pdf.ln(5)
    pdf.heading("运营情况说明")
    pdf.paragraph(report.narrative or "（待项目经理填写）", 10, height=6)
    pdf.ln(4)
    pdf.heading("按服务类别与部门")
    pdf.grid([["服务类别", "需求部门", "受理", "推进", "完成", "超时", "计量分录", "金额（元）"]] + [
        [r["service_line"], r["department"], r["received"], r["progressed"], r["completed"], r["overdue"],
         r["entries"], f"{r['amount']:,.2f}"] for r in figures["rows"]],
        (2.2, 2.2, 1, 1, 1, 1, 1.3, 2.3), align="LLRRRRRR")
    if not figures["rows"]:
        pdf.paragraph("（本月无数据）", 9.5)
    pdf.ln(4)
    pdf.heading("按时处理率")
    pdf.grid([["部门", "环节数", "按时", "超时", "按时处理率"]] + [
        [r["key"], r["tasks"], r["on_time"], r["overdue"], "—" if r["rate"] is None else f"{r['rate']:.2%}"]
        for r in figures["on_time_by_department"]], (3, 1.5, 1.5, 1.5, 2), align="LRRRR")
    pdf.ln(4)
    pdf.heading("目标进度")
    pdf.grid([["服务类别", "指标", "累计完成", "预估量/目标", "完成率"]] + [
        [r["service_line"], r["label"], r["completed"], r["target"] or "—",
         "—" if r["ratio"] is None else f"{r['ratio']:.2%}"] for r in figures["progress"]],
        (2, 3, 1.5, 1.8, 1.5), align="LLRRR")
    return pdf.to_bytes()
