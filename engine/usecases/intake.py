"""Bulk intake: a department's item list or the buyer's service orders (CSV/XLSX) → work items, all or none."""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, BinaryIO

from sqlalchemy import select

from engine import text
from engine.errors import Invalid
from engine.trust import audit
from engine.trust.access import authorize
from engine.usecases.tasks import Ctx, NewItem, create_item, line_kind, period_bounds
from storage.models import CHANNELS, Contract, Department, WorkItem

MAX_ROWS = 20_000
MAX_BYTES = 20 * 1024 * 1024

# Header → field; Chinese headers as they appear in 事项清单 / 运营服务单 sheets.
HEADERS: dict[str, str] = {
    "name": "name", "事项名称": "name", "名称": "name",
    "code": "code", "事项编码": "code", "编码": "code",
    "department": "department", "需求部门": "department", "部门": "department", "部门编码": "department",
    "service_line": "service_line", "服务类别": "service_line", "服务目录": "service_line",
    "channels": "channels", "渠道": "channels", "接入渠道": "channels",
    "mode": "mode", "接入方式": "mode",
    "difficulty": "difficulty", "难度系数": "difficulty",
    # Conditions a line's rules read, and a metered record's figures.
    "data_quality": "data_quality", "需数据质量检测": "data_quality", "数据质量检测": "data_quality",
    "departments": "departments", "协同部门": "departments", "关联部门": "departments",
    "parts": "parts", "亮证用证": "parts", "接入内容": "parts",
    "units": "units", "计量数量": "units",
    "period": "period", "计量期间": "period", "期间": "period",
}
REQUIRED = ("name", "code", "department", "service_line")
# Required for countable work; a metered record needs units and period instead, a deliverable neither.
COUNTABLE_REQUIRED = ("channels", "mode")
YES_WORDS = {"1", "y", "yes", "true", "是", "需要", "√"}
NO_WORDS = {"", "0", "n", "no", "false", "否", "不需要"}
PART_WORDS = {"showing": "showing", "亮证": "showing", "using": "using", "用证": "using"}
CHANNEL_WORDS = {
    "pc": "pc", "pc端": "pc", "电脑端": "pc", "网页端": "pc",
    "mobile": "mobile", "移动端": "mobile", "手机端": "mobile", "移动": "mobile",
    "kiosk": "kiosk", "自助终端": "kiosk", "自助端": "kiosk", "终端": "kiosk",
}
MODE_WORDS = {"new": "new", "新增": "new", "新增接入": "new", "iteration": "iteration", "迭代": "iteration",
              "优化迭代": "iteration", "优化": "iteration"}
_SPLIT = re.compile(r"[,，、;；/|\s]+")


@dataclass
class RowProblem:
    row: int
    column: str
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "problem": self.problem}


@dataclass
class ImportReport:
    rows: int = 0
    created: list[int] = field(default_factory=list)
    existing: int = 0
    to_create: int = 0
    errors: list[RowProblem] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "created": len(self.created), "existing": self.existing,
                "to_create": self.to_create, "dry_run": self.dry_run,
                "errors": [e.as_dict() for e in self.errors]}


class ImportInvalid(Invalid):
    code = "import_invalid"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def read_rows(stream: BinaryIO, filename: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """(headers, (spreadsheet row number, cells)) from a .csv (UTF-8, or GB18030 as Excel saves it) or .xlsx."""
    data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Invalid(f"{filename}: larger than {MAX_BYTES // (1024 * 1024)} MB", code="import_invalid")
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        from openpyxl import load_workbook

        try:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises several types for a file that is not a workbook
            raise Invalid(f"{filename}: not a readable .xlsx workbook ({type(exc).__name__})",
                          code="import_invalid") from exc
        sheet = book.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        header = [_cell(c) for c in next(rows, ())]
        return header, ((n, [_cell(c) for c in r]) for n, r in enumerate(rows, start=2))
    if lower.endswith(".csv"):
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:  # pragma: no cover - gb18030 decodes any byte string
            raise Invalid(f"{filename}: cannot decode the text", code="import_invalid")
        reader = csv.reader(io.StringIO(text))
        header = [_cell(c) for c in next(reader, [])]
        return header, ((n, [_cell(c) for c in r]) for n, r in enumerate(reader, start=2))
    raise Invalid(f"{filename}: give a .csv or .xlsx file", code="import_invalid")


def _columns(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    problems = []
    for index, name in enumerate(header):
        key = HEADERS.get(name.strip().lower()) or HEADERS.get(name.strip())
        if key is None:
            continue
        if key in columns:
            problems.append(RowProblem(1, name, f"column {key} appears twice"))
        columns[key] = index
    missing = [k for k in REQUIRED if k not in columns]
    for key in missing:
        problems.append(RowProblem(1, key, "missing column"))
    if problems:
        raise ImportInvalid("the header row is not usable", errors=[p.as_dict() for p in problems])
    return columns


def import_items(ctx: Ctx, contract_code: str, stream: BinaryIO, filename: str, *, dry_run: bool = False,
                 progress: Callable[[int], None] | None = None,
                 on_total: Callable[[int], None] | None = None) -> ImportReport:
    """Validate every row first; with any bad row, nothing is imported (ImportInvalid lists them all).

    Idempotent by contract + item code + mode: rows already registered are counted as existing, not created.
    """
    assert ctx.user is not None
    authorize(ctx.user, "item.import")
    session = ctx.session
    contract = session.execute(select(Contract).where(Contract.code == contract_code)).scalar()
    if contract is None:
        raise Invalid(f"unknown contract {contract_code!r}", code="invalid_form",
                      errors={"contract": ["unknown"]})
    header, rows = read_rows(stream, filename)
    columns = _columns(header)
    lines = {sl.code: sl for sl in contract.service_lines}
    departments = set(session.scalars(select(Department.code)))
    existing = {(code, mode) for code, mode in session.execute(
        select(WorkItem.code, WorkItem.mode).where(WorkItem.contract_id == contract.id))}
    report = ImportReport(dry_run=dry_run)
    specs: list[NewItem] = []
    seen: dict[tuple[str, str], int] = {}
    for number, cells in rows:
        if not any(cells):
            continue
        report.rows += 1
        if report.rows > MAX_ROWS:
            raise ImportInvalid(f"more than {MAX_ROWS} rows; split the file")
        spec = _row(number, cells, columns, contract.code, lines, departments, report.errors)
        if spec is None:
            continue
        key = (spec.code, spec.mode)
        if key in seen:
            report.errors.append(RowProblem(number, "code", f"same code and mode as row {seen[key]}"))
            continue
        seen[key] = number
        if key in existing:
            report.existing += 1
            continue
        specs.append(spec)
    report.to_create = len(specs)
    if report.errors:
        raise ImportInvalid(f"{len(report.errors)} problem(s) in {filename}; nothing was imported",
                            errors=[e.as_dict() for e in report.errors], report=report.as_dict())
    if dry_run:
        return report
    if on_total:
        on_total(len(specs))
    # One transaction for the whole file: all rows or none. create_item flushes where it needs ids, so the
    # autoflush before every query only costs time here.
    with session.no_autoflush:
        for spec in specs:
            item = create_item(ctx, spec)
            report.created.append(item.id)
            if progress:
                progress(1)
    audit.record(session, ctx.actor, "items.imported", target_type="contract", target_id=contract.id,
                 filename=filename[:200], rows=report.rows, created=len(report.created), existing=report.existing)
    return report


def _row(number: int, cells: list[str], columns: dict[str, int], contract: str, lines: dict[str, Any],
         departments: set[str], errors: list[RowProblem]) -> NewItem | None:
    def get(key: str) -> str:
        index = columns.get(key)
        return cells[index] if index is not None and index < len(cells) else ""

    before = len(errors)
    values = {k: get(k) for k in (*REQUIRED, *COUNTABLE_REQUIRED, "difficulty", "data_quality", "departments",
                                  "parts", "units", "period")}
    unstorable = [RowProblem(number, key, text.WHY) for key, value in values.items() if text.unstorable(value)]
    if unstorable:
        errors.extend(unstorable)
        return None
    for key in REQUIRED:
        if not values[key]:
            errors.append(RowProblem(number, key, "empty"))
    if values["name"] and len(values["name"]) > 300:
        errors.append(RowProblem(number, "name", "longer than 300 characters"))
    if values["code"] and len(values["code"]) > 100:
        errors.append(RowProblem(number, "code", "longer than 100 characters"))
    if values["department"] and values["department"] not in departments:
        errors.append(RowProblem(number, "department", f"unknown department {values['department']!r}"))
    line = lines.get(values["service_line"])
    if values["service_line"] and line is None:
        errors.append(RowProblem(number, "service_line", f"contract {contract} has no service line "
                                                         f"{values['service_line']!r}"))
    kind = line_kind(line) if line is not None else "countable"
    if kind == "countable":
        for key in COUNTABLE_REQUIRED:
            if not values[key] and not (key == "channels" and line is not None and not line.channels):
                errors.append(RowProblem(number, key, "empty"))
    attributes: dict[str, Any] = {}
    flag = values["data_quality"].strip().lower()
    if flag in YES_WORDS:
        attributes["data_quality"] = True
    elif flag not in NO_WORDS:
        errors.append(RowProblem(number, "data_quality", f"{values['data_quality']!r} is not 是/否"))
    if values["departments"]:
        linked = [d for d in _SPLIT.split(values["departments"]) if d]
        unknown = [d for d in linked if d not in departments]
        if unknown:
            errors.append(RowProblem(number, "departments", f"unknown departments {unknown}"))
        attributes["departments"] = list(dict.fromkeys(linked))
    if values["parts"]:
        parts = [PART_WORDS.get(p.lower()) for p in _SPLIT.split(values["parts"]) if p]
        if None in parts:
            errors.append(RowProblem(number, "parts", f"{values['parts']!r}: parts are 亮证/showing, 用证/using"))
        attributes["parts"] = [p for p in dict.fromkeys(parts) if p]
    units: Decimal | None = None
    if values["units"]:
        try:
            units = Decimal(values["units"].replace(",", ""))
            if not units.is_finite() or units <= 0:
                raise InvalidOperation
        except InvalidOperation:
            errors.append(RowProblem(number, "units", f"{values['units']!r} is not a number > 0"))
    if kind == "metered":
        if not values["units"]:
            errors.append(RowProblem(number, "units", "a metered line's record needs its units"))
        if not values["period"]:
            errors.append(RowProblem(number, "period", "a metered line's record needs its period (2026-11)"))
    elif values["units"]:
        errors.append(RowProblem(number, "units", f"service line {values['service_line']} is not metered"))
    if values["period"] and period_bounds(values["period"]) is None:
        errors.append(RowProblem(number, "period", f"{values['period']!r} is not a month like 2026-11"))
    mode = MODE_WORDS.get(values["mode"].lower()) if values["mode"] else None
    if values["mode"] and mode is None:
        errors.append(RowProblem(number, "mode", f"{values['mode']!r} is not new/新增 or iteration/优化迭代"))
    channels: list[str] = []
    for word in _SPLIT.split(values["channels"]):
        if not word:
            continue
        channel = CHANNEL_WORDS.get(word.lower())
        if channel is None:
            errors.append(RowProblem(number, "channels", f"unknown channel {word!r} (pc/mobile/kiosk)"))
        elif channel in channels:
            errors.append(RowProblem(number, "channels", f"channel {channel} listed twice"))
        else:
            channels.append(channel)
    if line is not None and channels and not line.channels:
        errors.append(RowProblem(number, "channels", f"service line {line.code} is priced without channels"))
    elif line is not None and channels:
        off = [c for c in channels if c not in line.channels]
        if off:
            errors.append(RowProblem(number, "channels", f"service line {line.code} is not offered on {off}"))
    difficulty = Decimal("1.00")
    if values["difficulty"]:
        try:
            difficulty = Decimal(values["difficulty"])
            if not difficulty.is_finite() or not Decimal("0.1") <= difficulty <= Decimal("5"):
                raise InvalidOperation
        except InvalidOperation:
            errors.append(RowProblem(number, "difficulty", f"{values['difficulty']!r} is not a number 0.1–5"))
    if len(errors) > before:
        return None
    return NewItem(contract=contract, service_line=values["service_line"], name=values["name"],
                   code=values["code"], department=values["department"], channels=[c for c in CHANNELS
                                                                                    if c in channels],
                   mode=mode or "new", difficulty=difficulty, attributes=attributes, units=units,
                   period=values["period"] or None)
