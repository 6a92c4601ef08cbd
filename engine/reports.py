"""Workload queries and exports: the detail sheet (工作量统计明细表) and completed-item counts."""
from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from storage.models import Contract, Department, ServiceLine, WorkItem, WorkloadEntry

TZ = ZoneInfo("Asia/Shanghai")
CHANNEL_NAMES = {"pc": "PC端", "mobile": "移动端", "kiosk": "自助终端"}
MODE_NAMES = {"new": "新增接入", "iteration": "优化迭代"}
DETAIL_HEADER = ["合同编号", "服务类别编号", "服务类别", "事项名称", "事项编码", "需求部门", "渠道", "接入方式",
                 "数量", "难度系数", "单价（元）", "金额（元）", "上线日期", "计量时间"]


@dataclass
class WorkloadFilter:
    contract: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    department: str | None = None
    service_line: str | None = None


def _bounds(f: WorkloadFilter) -> tuple[datetime | None, datetime | None]:
    start = datetime.combine(f.date_from, time(0), TZ) if f.date_from else None
    end = datetime.combine(f.date_to + timedelta(days=1), time(0), TZ) if f.date_to else None
    return start, end


def entries_query(f: WorkloadFilter) -> Select[Any]:
    query = (select(WorkloadEntry, WorkItem, ServiceLine, Department, Contract)
             .join(WorkItem, WorkloadEntry.item_id == WorkItem.id)
             .join(ServiceLine, WorkloadEntry.service_line_id == ServiceLine.id)
             .join(Department, WorkloadEntry.department_id == Department.id)
             .join(Contract, WorkloadEntry.contract_id == Contract.id))
    if f.contract:
        query = query.where(Contract.code == f.contract)
    if f.department:
        query = query.where(Department.code == f.department)
    if f.service_line:
        query = query.where(ServiceLine.code == f.service_line)
    start, end = _bounds(f)
    if start:
        query = query.where(WorkloadEntry.tallied_at >= start)
    if end:
        query = query.where(WorkloadEntry.tallied_at < end)
    return query.order_by(WorkloadEntry.id)


def totals(session: Session, f: WorkloadFilter) -> dict[str, Decimal]:
    sub = entries_query(f).subquery()
    units, amount = session.execute(select(func.coalesce(func.sum(sub.c.units), 0),
                                           func.coalesce(func.sum(sub.c.amount), 0))).one()
    return {"units": Decimal(units), "amount": Decimal(amount).quantize(Decimal("0.01"))}


def _row(entry: WorkloadEntry, item: WorkItem, line: ServiceLine, dept: Department, contract: Contract) -> list[Any]:
    live = item.completed_at.astimezone(TZ).date().isoformat() if item.completed_at else ""
    return [contract.code, line.code, line.name, item.name, item.code, dept.name,
            CHANNEL_NAMES.get(entry.channel, entry.channel), MODE_NAMES.get(entry.mode, entry.mode),
            entry.units, entry.difficulty, entry.unit_price, entry.amount, live,
            entry.tallied_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M")]


def iter_rows(session: Session, f: WorkloadFilter, batch: int = 2000) -> Iterator[list[Any]]:
    """Stream rows in id order with keyset paging, so memory stays bounded for any size."""
    last_id = 0
    while True:
        page = session.execute(entries_query(f).where(WorkloadEntry.id > last_id).limit(batch)).all()
        if not page:
            return
        for entry, item, line, dept, contract in page:
            yield _row(entry, item, line, dept, contract)
        last_id = page[-1][0].id
        session.expunge_all()


def counts(session: Session, f: WorkloadFilter) -> list[dict[str, Any]]:
    """Completed-item counts by service line, channel and department (tallies net of reversals)."""
    sub = entries_query(f).subquery()
    rows = session.execute(
        select(sub.c.service_line_id, sub.c.channel, sub.c.department_id,
               func.count(func.distinct(sub.c.item_id)), func.sum(sub.c.units), func.sum(sub.c.amount))
        .where(sub.c.reverses_id.is_(None))
        .group_by(sub.c.service_line_id, sub.c.channel, sub.c.department_id)).all()
    lines = {sl.id: sl for sl in session.scalars(select(ServiceLine))}
    depts = {d.id: d for d in session.scalars(select(Department))}
    out = [{"service_line": lines[sl].code, "service_line_name": lines[sl].name, "channel": ch,
            "department": depts[d].code, "department_name": depts[d].name, "items": n,
            "units": Decimal(u), "amount": Decimal(a)} for sl, ch, d, n, u, a in rows]
    return sorted(out, key=lambda r: (r["service_line"], r["channel"], r["department"]))


def _fmt(value: Any) -> Any:
    return f"{value:.2f}" if isinstance(value, Decimal) else value


def csv_stream(session: Session, f: WorkloadFilter) -> Iterator[bytes]:
    """UTF-8 with BOM so Excel shows the Chinese header."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    buf.write("\ufeff")
    writer.writerow(DETAIL_HEADER)
    count = 0
    for row in iter_rows(session, f):
        writer.writerow([_fmt(v) for v in row])
        count += 1
        if count % 1000 == 0:
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    t = totals(session, f)
    writer.writerow(["合计", "", "", "", "", "", "", "", _fmt(t["units"]), "", "", _fmt(t["amount"]), "", ""])
    yield buf.getvalue().encode("utf-8")


def xlsx_file(session: Session, f: WorkloadFilter) -> tempfile.SpooledTemporaryFile[bytes]:
    """Write the workbook in constant-memory mode to a temp file; the caller streams it."""
    import xlsxwriter

    out: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    tmpdir = tempfile.mkdtemp(prefix="itemgate-xlsx-")
    book = xlsxwriter.Workbook(out, {"constant_memory": True, "tmpdir": tmpdir, "in_memory": False})
    bold = book.add_format({"bold": True})
    money = book.add_format({"num_format": "#,##0.00"})
    sheet = book.add_worksheet("工作量统计明细表")
    sheet.write_row(0, 0, DETAIL_HEADER, bold)
    r = 0
    for r, row in enumerate(iter_rows(session, f), start=1):
        for c, value in enumerate(row):
            if isinstance(value, Decimal):
                sheet.write_number(r, c, float(value), money if c in (10, 11) else None)
            else:
                sheet.write(r, c, value)
    t = totals(session, f)
    sheet.write(r + 1, 0, "合计", bold)
    sheet.write_number(r + 1, 8, float(t["units"]))
    sheet.write_number(r + 1, 11, float(t["amount"]), money)
    summary = book.add_worksheet("完成事项统计")
    summary.write_row(0, 0, ["服务类别", "渠道", "需求部门", "完成事项数", "数量", "金额（元）"], bold)
    for i, c in enumerate(counts(session, f), start=1):
        summary.write_row(i, 0, [f"{c['service_line']} {c['service_line_name']}",
                                 CHANNEL_NAMES.get(c["channel"], c["channel"]), c["department_name"], c["items"]])
        summary.write_number(i, 4, float(c["units"]))
        summary.write_number(i, 5, float(c["amount"]), money)
    book.close()
    out.seek(0)
    return out
