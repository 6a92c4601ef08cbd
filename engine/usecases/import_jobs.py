"""Bulk intake from the web: the spreadsheet is kept in the object store, previewed as a dry run, then imported
by a background job (the export-job queue) that reports its progress; all rows or none."""
from __future__ import annotations

import io
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from engine.errors import DomainError, Invalid, NotFound
from engine.trust.access import authorize
from engine.usecases.intake import HEADERS, MAX_BYTES, REQUIRED, ImportInvalid, ImportReport, import_items, read_rows
from engine.usecases.job_progress import Progress, Superseded, start_heartbeat
from engine.usecases.tasks import Ctx
from storage.artefact_store import ArtefactStore
from storage.models import ExportJob, User, utcnow
from storage.unit_of_work import Transactions

log = logging.getLogger(__name__)

KIND = "item_import"
PREFIX = "imports/"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The template's columns: the Chinese headers engine/usecases/intake.py reads, in the order people fill them.
TEMPLATE_COLUMNS = (("事项名称", "name"), ("事项编码", "code"), ("需求部门", "department"),
                    ("服务类别", "service_line"), ("接入渠道", "channels"), ("接入方式", "mode"),
                    ("难度系数", "difficulty"), ("计量数量", "units"), ("计量期间", "period"))
assert all(HEADERS[h] == key for h, key in TEMPLATE_COLUMNS)


@dataclass(frozen=True)
class StagedFile:
    key: str
    version_id: str | None
    filename: str
    size: int


def stage(store: ArtefactStore, stream: Any, length: int, filename: str) -> StagedFile:
    """Keep an uploaded spreadsheet until it is imported (the key is the server's, never the filename)."""
    name = (filename or "items.xlsx").replace("\\", "/").rsplit("/", 1)[-1][:200] or "items.xlsx"
    if not name.lower().endswith((".xlsx", ".csv")):
        raise Invalid(f"{name}: give a .csv or .xlsx file", code="import_invalid")
    stored = store.put_stream(f"{PREFIX}{uuid.uuid4().hex}", stream, length, XLSX, MAX_BYTES)
    return StagedFile(stored.key, stored.version_id, name, stored.size)


def load_staged(store: ArtefactStore, staged: StagedFile) -> bytes:
    if not staged.key.startswith(PREFIX):
        raise NotFound("no such staged spreadsheet")
    return store.read_small(staged.key, staged.version_id, MAX_BYTES + 1)


@dataclass
class Preview:
    """Every row as read, with its problems next to it; `report` is the dry run's counts."""

    headers: list[str]
    rows: list[tuple[int, list[str], list[dict[str, Any]]]]
    header_problems: list[dict[str, Any]]
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.header_problems and not any(p for _n, _c, p in self.rows)


def preview(ctx: Ctx, contract: str, data: bytes, filename: str, limit: int = 2000) -> Preview:
    """The dry run of import_items, with the rows themselves for the page (the first `limit` of them)."""
    assert ctx.user is not None
    authorize(ctx.user, "item.import")
    headers, rows = read_rows(io.BytesIO(data), filename)
    shown: list[tuple[int, list[str]]] = [(n, cells) for n, cells in rows if any(cells)][:limit]
    try:
        report = import_items(ctx, contract, io.BytesIO(data), filename, dry_run=True).as_dict()
        problems: list[dict[str, Any]] = []
    except ImportInvalid as err:
        problems = list(err.extra.get("errors") or [])
        report = dict(err.extra.get("report") or ImportReport(dry_run=True).as_dict())
        report["errors"] = problems
    by_row: dict[int, list[dict[str, Any]]] = {}
    for p in problems:
        by_row.setdefault(int(p["row"]), []).append(p)
    header_problems = by_row.pop(1, [])
    rows_out = [(n, cells, by_row.pop(n, [])) for n, cells in shown]
    return Preview(headers, rows_out, header_problems, report)


def queue_import(session: Session, user: User, contract: str, staged: StagedFile) -> ExportJob:
    """Queue the import as a background job of the requester; the caller commits and starts it."""
    authorize(user, "item.import")
    authorize(user, "export.job")
    job = ExportJob(kind=KIND, params={"contract": contract[:64], "key": staged.key, "version_id": staged.version_id,
                                       "filename": staged.filename, "size": staged.size},
                    requested_by_id=user.id, status="queued", progress_done=0, progress_total=0,
                    created_at=utcnow())
    session.add(job)
    session.flush()
    return job


def result_of(job: ExportJob) -> dict[str, Any] | None:
    """The import's report once the job ended (done: counts; failed for bad rows: the problems)."""
    result = (job.params or {}).get("result")
    return dict(result) if isinstance(result, dict) else None


def run_import(transactions: Transactions, store: ArtefactStore, job: ExportJob) -> str:
    """Run a claimed import job: one transaction for the whole file, progress written as rows are created."""
    job_id = job.id
    report = Progress(transactions, job_id, job.attempts)
    end_heartbeat = start_heartbeat(report, f"import-job-{job_id}-heartbeat")
    params = dict(job.params or {})
    staged = StagedFile(params.get("key", ""), params.get("version_id"), params.get("filename", "items.xlsx"),
                        int(params.get("size") or 0))
    try:
        outcome: dict[str, Any]
        status = "done"
        try:
            data = load_staged(store, staged)
            total = [0]
            done = [0]
            live = [True]

            def on_total(n: int) -> None:
                total[0] = n
                if live[0]:
                    report(0, n)

            def progress(step: int) -> None:
                done[0] += step
                if live[0]:
                    report(done[0], total[0])

            with transactions() as session:
                # SQLite has one writer: while the import's transaction is open no other connection can write
                # progress, so there the bar moves when the import commits. PostgreSQL shows it row by row.
                live[0] = session.get_bind().dialect.name != "sqlite"
                user = session.get(User, job.requested_by_id)
                if user is None or not user.active:
                    raise Invalid("the requester is no longer active", code="role_required")
                ctx = Ctx(session=session, user=user, store=store)
                result = import_items(ctx, params.get("contract", ""), io.BytesIO(data), staged.filename,
                                      progress=progress, on_total=on_total)
            outcome = result.as_dict()
            report.write(done=len(result.created), total=len(result.created))
        except Superseded:
            log.warning("import job %s: attempt %s was given up on; another runner has it", job_id, job.attempts)
            return "superseded"
        except DomainError as err:
            status = "failed"
            outcome = {"code": err.code, "detail": err.detail, "errors": list(err.extra.get("errors") or [])}
        except Exception as exc:  # noqa: BLE001 - any failure ends the job as failed, with the reason recorded
            log.exception("import job %s failed", job_id)
            status = "failed"
            outcome = {"code": "internal", "detail": f"{type(exc).__name__}: {exc}"[:2000], "errors": []}
        params["result"] = outcome
        try:
            report.write(status=status, params=params, finished_at=utcnow(),
                         error=None if status == "done" else json.dumps(outcome, ensure_ascii=False)[:4000])
        except Superseded:
            return "superseded"
        # The staged copy is only kept for this import: done or failed for good, it goes (a corrected file is
        # uploaded and previewed afresh).
        try:
            store.delete(staged.key, staged.version_id)
        except Exception:  # noqa: BLE001 - best effort; an unreferenced staged copy harms nothing
            log.warning("import job %s: could not remove the staged spreadsheet", job_id, exc_info=True)
        return status
    finally:
        end_heartbeat()


def template_xlsx() -> bytes:
    """The import template: Chinese headers on the first sheet, what to write in each on the second."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = "事项清单"
    sheet.append([h for h, _k in TEMPLATE_COLUMNS])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for column, width in zip("ABCDEFGHI", (30, 18, 12, 10, 22, 12, 10, 14, 12), strict=True):
        sheet.column_dimensions[column].width = width
    # The period stays the text 2026-11: a month typed into a General cell becomes a date in Excel.
    sheet.column_dimensions["I"].number_format = "@"
    notes = book.create_sheet("填写说明")
    notes.append(["列", "必填", "填写说明"])
    help_text = {
        "name": "事项名称", "code": "事项编码（同一合同内，编码与接入方式相同的行视为同一事项，重复导入不会重复登记）",
        "department": "需求部门编码，如 SHGA", "service_line": "服务目录中的服务类别编号，如 1、5、12",
        "channels": "PC端、移动端、自助终端，多个用顿号或逗号分隔", "mode": "新增接入 或 优化迭代",
        "difficulty": "建议难度系数，0.1 至 5，不填为 1.0",
        "units": ("仅计量类服务类别（如接口调用量、短信、人月）填写：本期计量数量，大于 0，可含小数；"
                  "此类行不填渠道和接入方式"),
        "period": "仅计量类服务类别填写：记录所属月份，格式 2026-11",
    }
    for header, key in TEMPLATE_COLUMNS:
        notes.append([header, "是" if key in REQUIRED else "否", help_text[key]])
    notes.column_dimensions["A"].width = 12
    notes.column_dimensions["C"].width = 80
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
