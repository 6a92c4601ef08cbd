"""Workload queries and exports: the detail sheet (工作量统计明细表), completed-item counts, progress, claims."""
from __future__ import annotations

import csv
import io
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, Select, case, func, select, type_coerce
from sqlalchemy.orm import Session, aliased

from engine.money.ledger import CENT
from storage.models import (
    Contract,
    Department,
    ServiceLine,
    Settlement,
    SettlementLine,
    SettlementNote,
    User,
    WorkItem,
    WorkloadEntry,
)

TZ = ZoneInfo("Asia/Shanghai")
CHANNEL_NAMES = {"pc": "PC端", "mobile": "移动端", "kiosk": "自助终端", "all": "不分渠道"}
CHANNEL_RANK = {"pc": 0, "mobile": 1, "kiosk": 2}  # the catalogue's order, not the alphabet's
MODE_NAMES = {"new": "新增接入", "iteration": "优化迭代", "record": "计量记录", "deliverable": "交付成果"}
DETAIL_HEADER = ["合同编号", "服务类别编号", "服务类别", "事项名称", "事项编码", "需求部门", "渠道", "接入方式",
                 "数量", "难度系数", "单价（元）", "金额（元）", "上线日期", "计量时间", "分录号", "冲销说明",
                 "完成时间", "计量期间", "难度系数提出人", "难度系数确认人", "超出服务期"]
UNITS_COL, AMOUNT_COL, PRICE_COL = 8, 11, 10
COUNTS_HEADER = ["服务类别编号", "服务类别", "渠道", "需求部门", "月份", "完成事项数", "数量", "金额（元）"]
PROGRESS_HEADER = ["服务类别编号", "服务类别", "渠道/指标", "已完成", "预估量/目标", "完成率", "按期应完成", "是否按期",
                   "期间起", "期间止"]


@dataclass
class WorkloadFilter:
    contract: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    department: str | None = None
    service_line: str | None = None
    settlement_id: int | None = None
    # An approved claim shows what was claimed even if an item was cancelled afterwards.
    include_cancelled: bool = False


def _bounds(f: WorkloadFilter) -> tuple[datetime | None, datetime | None]:
    start = datetime.combine(f.date_from, time(0), TZ) if f.date_from else None
    end = datetime.combine(f.date_to + timedelta(days=1), time(0), TZ) if f.date_to else None
    return start, end


def filtered_entries(query: Select[Any], f: WorkloadFilter) -> Select[Any]:
    if f.contract:
        query = query.where(Contract.code == f.contract)
    if f.department:
        query = query.where(Department.code == f.department)
    if f.service_line:
        query = query.where(ServiceLine.code == f.service_line)
    if f.settlement_id is not None:
        claimed = select(SettlementLine.entry_id).where(SettlementLine.settlement_id == f.settlement_id)
        query = query.where(WorkloadEntry.id.in_(claimed))
    if not f.include_cancelled:
        # A cancelled item is never billable, whatever entries it may have.
        query = query.where(WorkItem.status != "cancelled")
    start, end = _bounds(f)
    if start:
        query = query.where(WorkloadEntry.tallied_at >= start)
    if end:
        query = query.where(WorkloadEntry.tallied_at < end)
    return query


def joined_entries(query: Any) -> Any:
    return (query.join(WorkItem, WorkloadEntry.item_id == WorkItem.id)
            .join(ServiceLine, WorkloadEntry.service_line_id == ServiceLine.id)
            .join(Department, WorkloadEntry.department_id == Department.id)
            .join(Contract, WorkloadEntry.contract_id == Contract.id))


def entries_query(f: WorkloadFilter) -> Select[Any]:
    query = joined_entries(select(WorkloadEntry, WorkItem, ServiceLine, Department, Contract)
                           .select_from(WorkloadEntry))
    return filtered_entries(query, f).order_by(WorkloadEntry.id)


def entry_count(session: Session, f: WorkloadFilter) -> int:
    """How many entries the detail sheet lists: the total a progress report counts towards."""
    query = filtered_entries(joined_entries(select(func.count(WorkloadEntry.id)).select_from(WorkloadEntry)), f)
    return int(session.execute(query).scalar_one())


def totals(session: Session, f: WorkloadFilter) -> dict[str, Decimal]:
    return count_and_totals(session, f)[1]


def count_and_totals(session: Session, f: WorkloadFilter) -> tuple[int, dict[str, Decimal]]:
    """How many entries match and their units and amount, in one pass over them (a ledger page needs both:
    over 100,000 entries each pass is most of the page's time)."""
    query = filtered_entries(joined_entries(select(func.count(WorkloadEntry.id),
                                                   func.coalesce(func.sum(WorkloadEntry.units), 0),
                                                   func.coalesce(func.sum(WorkloadEntry.amount), 0))
                                            .select_from(WorkloadEntry)), f)
    count, units, amount = session.execute(query).one()
    return int(count), {"units": Decimal(units), "amount": Decimal(amount).quantize(CENT)}


# Timestamps are read through plain DateTime, not the UTCDateTime decorator (a Python call per value on top of the
# conversion each export makes anyway): PostgreSQL returns them aware, SQLite naive in UTC (see `_local`).
_DETAIL_COLS = (Contract.id.label("contract_id"), Contract.code.label("contract_code"),
                ServiceLine.position.label("line_position"), ServiceLine.id.label("line_id"),
                ServiceLine.code.label("line_code"), ServiceLine.name.label("line_name"),
                WorkItem.name.label("item_name"), WorkItem.code.label("item_code"),
                Department.name.label("department_name"), WorkloadEntry.channel, WorkloadEntry.mode,
                WorkloadEntry.units, WorkloadEntry.difficulty, WorkloadEntry.unit_price, WorkloadEntry.amount,
                type_coerce(WorkItem.completed_at, DateTime(timezone=True)).label("completed_at"),
                type_coerce(WorkloadEntry.tallied_at, DateTime(timezone=True)).label("tallied_at"),
                WorkloadEntry.id.label("entry_id"), WorkloadEntry.reverses_id, WorkloadEntry.reason,
                WorkItem.go_live_date, WorkItem.period, WorkItem.out_of_period,
                select(User.username).where(User.id == WorkloadEntry.difficulty_proposed_by_id)
                .scalar_subquery().label("proposed_by"),
                select(User.username).where(User.id == WorkloadEntry.difficulty_confirmed_by_id)
                .scalar_subquery().label("confirmed_by"))


# Streamed workbooks; text that users typed (item names, notes) is always written as text: never as a formula
# (a name starting with "=") or a link, whatever xlsxwriter's `write()` would guess.
XLSX_OPTIONS: dict[str, Any] = {"constant_memory": True, "in_memory": False, "strings_to_formulas": False,
                                "strings_to_urls": False, "strings_to_numbers": False}


def _core_rows(session: Session, query: Select[Any], batch: int) -> Any:
    """Stream a column query's rows in batches (a server-side cursor on PostgreSQL) as a Core statement on the
    session's connection: plain rows without the ORM's per-row loading, and nothing kept in the session."""
    if session.autoflush:  # what session.execute would do first
        session.flush()
    return session.connection().execute(query.execution_options(yield_per=batch))


def _local(value: datetime) -> datetime:
    """A stored UTC time in Asia/Shanghai; naive values (SQLite) are UTC."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(TZ)


def _row(r: Any) -> list[Any]:
    # 上线日期 is the date entered on the go-live step; the completion time is a column of its own.
    live = r.go_live_date.isoformat() if r.go_live_date else ""
    done = _local(r.completed_at).strftime("%Y-%m-%d %H:%M") if r.completed_at else ""
    note = f"冲销 #{r.reverses_id}：{r.reason or ''}" if r.reverses_id else ""
    return [r.contract_code, r.line_code, r.line_name, r.item_name, r.item_code, r.department_name,
            CHANNEL_NAMES.get(r.channel, r.channel), MODE_NAMES.get(r.mode, r.mode),
            r.units, r.difficulty, r.unit_price, r.amount, live,
            _local(r.tallied_at).strftime("%Y-%m-%d %H:%M"), r.entry_id, note,
            done, r.period or "", r.proposed_by or "", r.confirmed_by or "", "是" if r.out_of_period else ""]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: Any) -> Any:
    """A text cell of a CSV export: names and notes are typed by users, and a spreadsheet program reads text
    starting with =, +, -, @, tab or CR as a formula; such text gets a leading apostrophe so it shows as text."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _csv_row(r: Any) -> list[Any]:
    """`_row` with the money columns already formatted as `_fmt` does: the CSV path, in one pass per entry."""
    (_cid, contract_code, _pos, _lid, line_code, line_name, item_name, item_code, department_name, channel, mode,
     units, difficulty, unit_price, amount, completed_at, tallied_at, entry_id, reverses_id, reason, go_live_date,
     period, out_of_period, proposed_by, confirmed_by) = r
    return [contract_code, line_code, _text(line_name), _text(item_name), _text(item_code), _text(department_name),
            CHANNEL_NAMES.get(channel, channel), MODE_NAMES.get(mode, mode),
            _number(units), f"{difficulty:.2f}", _number(unit_price), f"{amount:.2f}",
            go_live_date.isoformat() if go_live_date else "",
            # isoformat ("YYYY-MM-DD HH:MM+08:00") cut to the minute: what strftime gives, at a third of the cost
            _local(tallied_at).isoformat(" ", "minutes")[:16], entry_id,
            f"冲销 #{reverses_id}：{reason or ''}" if reverses_id else "",
            _local(completed_at).isoformat(" ", "minutes")[:16] if completed_at else "", period or "",
            proposed_by or "", confirmed_by or "", "是" if out_of_period else ""]


def _number(value: Decimal) -> str:
    """Units and unit prices as the contract writes them: two places, more where they have more (0.004 元)."""
    value = Decimal(value)
    text = f"{value:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


# ---------------------------------------------------------------- the detail sheet, grouped with subtotals

@dataclass
class DetailLine:
    """One line of the detail sheet: an entry row, a subtotal (per service line × channel, per service line)
    or the grand total."""

    kind: str  # "entry" | "channel_subtotal" | "line_subtotal" | "total"
    values: list[Any]
    units: Decimal
    amount: Decimal


def _summary_values(label: str, line_code: str = "", line_name: str = "", channel: str = "",
                    units: Decimal = Decimal(0), amount: Decimal = Decimal(0)) -> list[Any]:
    values: list[Any] = [""] * len(DETAIL_HEADER)
    values[0], values[1], values[2], values[6] = label, line_code, line_name, channel
    values[UNITS_COL], values[AMOUNT_COL] = units, amount.quantize(CENT)
    return values


def _sheet(session: Session, f: WorkloadFilter, batch: int = 2000) -> Iterator[tuple[str, Any]]:
    """The detail sheet in order: ("entry", row of `_DETAIL_COLS`) per entry, and (kind, DetailLine) for each
    subtotal and the total. Entries are grouped by service line and channel, with a subtotal after each group
    and each line, then the total. One ordered query streamed in batches (a server-side cursor on PostgreSQL):
    a single sort, and memory stays flat however many entries there are. (Keyset paging re-sorted the whole
    ledger per page.)"""
    rank = case(CHANNEL_RANK, value=WorkloadEntry.channel, else_=len(CHANNEL_RANK))
    key_cols = (Contract.id, ServiceLine.position, ServiceLine.id, rank, WorkloadEntry.id)
    base = filtered_entries(joined_entries(select(*_DETAIL_COLS).select_from(WorkloadEntry)), f).order_by(*key_cols)
    result = _core_rows(session, base, batch)

    line_key: int | None = None
    line_label: tuple[str, str] = ("", "")
    group_channel = ""
    # Per group only; a group's sums roll up into its line's, a line's into the total (Decimal sums are exact).
    g_units = g_amount = l_units = l_amount = t_units = t_amount = Decimal(0)

    def channel_sub() -> DetailLine:
        return DetailLine("channel_subtotal", _summary_values(
            "小计", line_label[0], line_label[1], CHANNEL_NAMES.get(group_channel, group_channel), g_units,
            g_amount), g_units, g_amount)

    def line_sub() -> DetailLine:
        return DetailLine("line_subtotal", _summary_values(
            "服务类别合计", line_label[0], line_label[1], "", l_units, l_amount), l_units, l_amount)

    for r in result:
        line_id, channel = r.line_id, r.channel
        if channel != group_channel or line_id != line_key:
            if line_key is not None:
                yield "channel_subtotal", channel_sub()
                l_units += g_units
                l_amount += g_amount
                g_units = g_amount = Decimal(0)
                if line_id != line_key:
                    yield "line_subtotal", line_sub()
                    t_units += l_units
                    t_amount += l_amount
                    l_units = l_amount = Decimal(0)
            line_key, group_channel, line_label = line_id, channel, (r.line_code, r.line_name)
        g_units += r.units
        g_amount += r.amount
        yield "entry", r
    if line_key is not None:
        yield "channel_subtotal", channel_sub()
        l_units += g_units
        l_amount += g_amount
        yield "line_subtotal", line_sub()
        t_units += l_units
        t_amount += l_amount
    yield "total", DetailLine("total", _summary_values("合计", units=t_units, amount=t_amount), t_units, t_amount)


def iter_detail(session: Session, f: WorkloadFilter, batch: int = 2000) -> Iterator[DetailLine]:
    """The detail sheet line by line (see `_sheet`): entries, subtotals after each service line × channel and
    each service line, then the total."""
    for kind, r in _sheet(session, f, batch):
        yield DetailLine("entry", _row(r), r.units, r.amount) if kind == "entry" else r


# ---------------------------------------------------------------- counts and progress

def counts(session: Session, f: WorkloadFilter) -> list[dict[str, Any]]:
    """Completed-item counts by service line, channel and department (units and amounts net of reversals)."""
    grouped: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in monthly_counts(session, f):
        key = (row["service_line"], row["channel"], row["department"])
        acc = grouped.setdefault(key, {k: row[k] for k in ("service_line", "service_line_name", "channel",
                                                           "department", "department_name")}
                                 | {"items": 0, "units": Decimal(0), "amount": Decimal(0)})
        acc["items"] += row["items"]
        acc["units"] += row["units"]
        acc["amount"] += row["amount"]
    return [grouped[k] for k in sorted(grouped)]


def _net_rows(session: Session, f: WorkloadFilter) -> Iterator[tuple[Any, ...]]:
    """(line id, channel, department id, item id, month, units, amount) per entry; a reversal is dated by
    the entry it reverses, so a correction lands in the month of the work it corrects."""
    original = aliased(WorkloadEntry)
    query = filtered_entries(joined_entries(
        select(WorkloadEntry.service_line_id, WorkloadEntry.channel, WorkloadEntry.department_id,
               WorkloadEntry.item_id,
               # typed, or SQLite hands the COALESCE back as text; plain DateTime as in `_DETAIL_COLS`
               type_coerce(func.coalesce(original.tallied_at, WorkloadEntry.tallied_at), DateTime(timezone=True)),
               WorkloadEntry.units, WorkloadEntry.amount)
        .select_from(WorkloadEntry)
        .outerjoin(original, original.id == WorkloadEntry.reverses_id)), f)
    result = _core_rows(session, query, 2000)  # over every entry, twice per workbook
    for line_id, channel, dept_id, item_id, at, units, amount in result:
        yield line_id, channel, dept_id, item_id, _local(at).strftime("%Y-%m"), units, amount


def monthly_counts(session: Session, f: WorkloadFilter) -> list[dict[str, Any]]:
    """Completed items by service line × channel × department × month. An item counts once per group while
    its net units there are positive (a fully reversed entry no longer counts)."""
    per_item: dict[tuple[int, str, int, str], dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    sums: dict[tuple[int, str, int, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for line_id, channel, dept_id, item_id, month, units, amount in _net_rows(session, f):
        key = (line_id, channel, dept_id, month)
        per_item[key][item_id] += Decimal(units)
        sums[key][0] += Decimal(units)
        sums[key][1] += Decimal(amount)
    lines = {sl.id: sl for sl in session.scalars(select(ServiceLine))}
    depts = {d.id: d for d in session.scalars(select(Department))}
    out = []
    for key, (units, amount) in sums.items():
        line_id, channel, dept_id, month = key
        out.append({"service_line": lines[line_id].code, "service_line_name": lines[line_id].name,
                    "channel": channel, "department": depts[dept_id].code, "department_name": depts[dept_id].name,
                    "month": month, "items": sum(1 for u in per_item[key].values() if u > 0),
                    "units": units, "amount": amount.quantize(CENT)})
    return sorted(out, key=lambda r: (_line_sort(lines, r["service_line"]), r["channel"], r["department"],
                                      r["month"]))


def _line_sort(lines: dict[int, ServiceLine], code: str) -> tuple[int, str]:
    positions = {sl.code: sl.position for sl in lines.values()}
    return positions.get(code, 0), code


def progress(session: Session, f: WorkloadFilter, today: date | None = None) -> list[dict[str, Any]]:
    """Completed items per service line and channel against the catalogue's estimated volumes, and per line
    against each countable target (e.g. scenario guides 37 of ≥ 50): done, percent, and whether the pace is on
    track for the target's period (its own, else the contract's) as of `today` (China time)."""
    today = today or datetime.now(TZ).date()
    done: dict[tuple[int, str], dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    months: dict[tuple[int, int], str] = {}
    for line_id, channel, _dept, item_id, month, units, _amount in _net_rows(session, f):
        done[(line_id, channel)][item_id] += Decimal(units)
        months[(line_id, item_id)] = min(month, months.get((line_id, item_id), month))
    query = (select(ServiceLine, Contract).join(Contract, Contract.id == ServiceLine.contract_id))
    if f.contract:
        query = query.where(Contract.code == f.contract)
    if f.service_line:
        query = query.where(ServiceLine.code == f.service_line)
    out: list[dict[str, Any]] = []
    for line, contract in session.execute(query.order_by(Contract.id, ServiceLine.position)):
        line_items: set[int] = set()
        period = (contract.period_start, contract.period_end)
        for channel in line.channels or ["all"]:
            items = {i for i, u in done.get((line.id, channel), {}).items() if u > 0}
            line_items |= items
            estimate = (line.estimated_volumes or {}).get(channel)
            out.append(_progress_row(contract, line, channel, CHANNEL_NAMES.get(channel, channel), len(items),
                                     {"min": estimate} if estimate else None, period, today))
        for name, bounds in sorted((line.targets or {}).items()):
            if isinstance(bounds, int | float):  # stored before targets were normalised
                bounds = {"min": int(bounds)}
            if not isinstance(bounds, dict):
                continue
            # A target with its own period counts the work of that period; otherwise all of the contract's
            # (work outside the contract's period is flagged on the item), paced over the contract's period.
            own_start = date.fromisoformat(bounds["start"]) if bounds.get("start") else None
            own_end = date.fromisoformat(bounds["end"]) if bounds.get("end") else None
            start, end = own_start or period[0], own_end or period[1]
            counted = [i for i in line_items
                       if (own_start is None or months[(line.id, i)] >= own_start.strftime("%Y-%m"))
                       and (own_end is None or months[(line.id, i)] <= own_end.strftime("%Y-%m"))]
            out.append(_progress_row(contract, line, f"target:{name}", TARGET_LABELS.get(name, name), len(counted),
                                     bounds, (start, end), today))
    return out


TARGET_LABELS = {"items": "目标数", "scenario_guides": "场景导办事项目标", "min_items": "目标数"}


def _progress_row(contract: Contract, line: ServiceLine, key: str, label: str, completed: int,
                  bounds: dict[str, Any] | None, period: tuple[date | None, date | None],
                  today: date) -> dict[str, Any]:
    target = None if not bounds else bounds.get("min", bounds.get("max"))
    ratio = None if not target else round(completed / float(target), 4)
    start, end = period
    on_track: bool | None = None
    expected: float | None = None
    if bounds and "min" in bounds and target:
        # The share of the period gone by: the pace the target needs by now.
        if start is not None and end is not None and end >= start:
            elapsed = min(max((today - start).days + 1, 0), (end - start).days + 1) / ((end - start).days + 1)
        else:
            elapsed = 1.0
        expected = round(float(target) * elapsed, 2)
        on_track = completed >= int(expected)
    if bounds and "max" in bounds:
        on_track = (on_track is not False) and completed <= bounds["max"]
    return {"contract": contract.code, "service_line": line.code, "service_line_name": line.name, "measure": key,
            "label": label, "completed": completed, "done": completed, "target": target,
            "bound": "max" if bounds and "min" not in bounds else "min", "ratio": ratio,
            "percent": None if ratio is None else round(ratio * 100, 2), "expected_by_now": expected,
            "on_track": on_track, "period_start": start.isoformat() if start else None,
            "period_end": end.isoformat() if end else None}


# ---------------------------------------------------------------- file formats

def _fmt(value: Any) -> Any:
    return f"{value:.2f}" if isinstance(value, Decimal) else _text(value)


def csv_stream(session: Session, f: WorkloadFilter,
               progress: Callable[[int, int], None] | None = None) -> Iterator[bytes]:
    """The detail sheet as CSV, UTF-8 with BOM so Excel shows the Chinese header. `progress(done, total)`
    is called with entries written so far."""
    total = entry_count(session, f) if progress is not None else 0
    done = 0
    buf = io.StringIO()
    writer = csv.writer(buf)
    buf.write("\ufeff")
    writer.writerow(DETAIL_HEADER)
    rows: list[list[Any]] = []
    for kind, r in _sheet(session, f):
        if kind == "entry":
            rows.append(_csv_row(r))
            if progress is not None:
                done += 1
                progress(done, total)
        else:
            rows.append([_fmt(v) for v in r.values])
        if len(rows) == 2000:  # a chunk of about 330 kB
            writer.writerows(rows)
            rows.clear()
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    writer.writerows(rows)
    if progress is not None:
        progress(max(done, total), max(done, total))
    yield buf.getvalue().encode("utf-8")


def counts_csv_stream(session: Session, f: WorkloadFilter) -> Iterator[bytes]:
    """Completed-item counts by service line × channel × department × month, UTF-8 with BOM."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    buf.write("\ufeff")
    writer.writerow(COUNTS_HEADER)
    for c in monthly_counts(session, f):
        channel = CHANNEL_NAMES.get(c["channel"], c["channel"])
        writer.writerow([c["service_line"], _text(c["service_line_name"]), channel,
                         _text(c["department_name"]), c["month"], c["items"], _fmt(c["units"]), _fmt(c["amount"])])
    yield buf.getvalue().encode("utf-8")


class _Book:
    """An xlsxwriter workbook in constant-memory mode, written to a spooled temp file the caller streams."""

    def __init__(self) -> None:
        import xlsxwriter

        self.out: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        self._tmp = tempfile.TemporaryDirectory(prefix="itemgate-xlsx-")
        self.book = xlsxwriter.Workbook(self.out, XLSX_OPTIONS | {"tmpdir": self._tmp.name})
        self.bold = self.book.add_format({"bold": True})
        self.money = self.book.add_format({"num_format": "#,##0.00"})
        self.bold_money = self.book.add_format({"num_format": "#,##0.00", "bold": True})
        self.pct = self.book.add_format({"num_format": "0.00%"})

    def close(self) -> tempfile.SpooledTemporaryFile[bytes]:
        self.book.close()
        self._tmp.cleanup()
        self.out.seek(0)
        return self.out

    def detail_sheet(self, session: Session, f: WorkloadFilter, name: str = "工作量统计明细表",
                     progress: Callable[[int, int], None] | None = None) -> Decimal:
        sheet = self.book.add_worksheet(name)
        sheet.write_row(0, 0, DETAIL_HEADER, self.bold)
        sheet.set_column(0, 0, 14)
        sheet.set_column(3, 3, 30)
        total = Decimal(0)
        expected = entry_count(session, f) if progress is not None else 0
        done = 0
        for r, line in enumerate(iter_detail(session, f), start=1):
            if progress is not None and line.kind == "entry":
                done += 1
                progress(done, expected)
            emphasis = line.kind != "entry"
            for c, value in enumerate(line.values):
                if isinstance(value, Decimal):
                    fmt = (self.bold_money if emphasis else self.money) if c in (PRICE_COL, AMOUNT_COL) else None
                    sheet.write_number(r, c, float(value), fmt)
                elif value != "":
                    sheet.write(r, c, value, self.bold if emphasis else None)
            if line.kind == "total":
                total = line.amount
        return total

    def counts_sheet(self, session: Session, f: WorkloadFilter) -> None:
        sheet = self.book.add_worksheet("完成事项统计")
        sheet.write_row(0, 0, COUNTS_HEADER, self.bold)
        for i, c in enumerate(monthly_counts(session, f), start=1):
            sheet.write_row(i, 0, [c["service_line"], c["service_line_name"],
                                   CHANNEL_NAMES.get(c["channel"], c["channel"]), c["department_name"], c["month"],
                                   c["items"]])
            sheet.write_number(i, 6, float(c["units"]))
            sheet.write_number(i, 7, float(c["amount"]), self.money)

    def progress_sheet(self, session: Session, f: WorkloadFilter) -> None:
        sheet = self.book.add_worksheet("完成进度")
        sheet.write_row(0, 0, PROGRESS_HEADER, self.bold)
        for i, p in enumerate(progress(session, f), start=1):
            sheet.write_row(i, 0, [p["service_line"], p["service_line_name"], p["label"], p["completed"]])
            if p["target"] is not None:
                sheet.write_number(i, 4, float(p["target"]))
            if p["ratio"] is not None:
                sheet.write_number(i, 5, p["ratio"], self.pct)
            if p["expected_by_now"] is not None:
                sheet.write_number(i, 6, p["expected_by_now"])
            if p["on_track"] is not None:
                sheet.write(i, 7, "是" if p["on_track"] else "否")
            sheet.write(i, 8, p["period_start"] or "")
            sheet.write(i, 9, p["period_end"] or "")


def xlsx_file(session: Session, f: WorkloadFilter,
              progress: Callable[[int, int], None] | None = None) -> tempfile.SpooledTemporaryFile[bytes]:
    """The detail sheet with subtotals, the completed-item counts by month, and progress; one workbook.
    `progress(done, total)` is called with detail entries written so far."""
    book = _Book()
    book.detail_sheet(session, f, progress=progress)
    book.counts_sheet(session, f)
    book.progress_sheet(session, f)
    return book.close()


def counts_xlsx_file(session: Session, f: WorkloadFilter) -> tempfile.SpooledTemporaryFile[bytes]:
    book = _Book()
    book.counts_sheet(session, f)
    book.progress_sheet(session, f)
    return book.close()


# A settlement's state as people read it.
SETTLEMENT_STATUS_NAMES = {"draft": "编制中", "revising": "修改中", "audit": "第三方审核",
                           "first_review": "采购单位初审", "final_approval": "采购单位审定",
                           "approved": "已审定（锁定）"}

# The review trail's entries as the buyer reads them (web page and the claim sheet's 审核意见).
NOTE_NAMES = {
    "opened": "开启结算", "submitted": "提交申报", "comment": "逐条意见", "accepted": "第三方审核通过",
    "returned": "第三方退回修改", "added": "增加分录", "removed": "移除分录",
    "first_review_approve": "采购单位初审通过", "first_review_return": "采购单位初审退回",
    "final_approve": "审定通过（锁定）", "final_return": "审定退回",
}

CLAIM_SUMMARY = [("gross", "申报金额（元）"), ("penalty", "逾期提交扣款（元）"), ("deduction", "考核扣款（元）"),
                 ("net", "应付金额（元）")]


STAGE_HEADERS = ["结算阶段", "名称", "期间起", "期间止", "结算单号", "申报状态", "申报金额（元）", "审定金额（元）",
                 "累计审定金额（元）", "本期"]


def claim_xlsx_file(session: Session, settlement: Settlement, figures: Any,
                    stages: list[dict[str, Any]] | None = None) -> tempfile.SpooledTemporaryFile[bytes]:
    """The settlement claim sheet: its lines grouped with subtotals, then gross, penalty, deduction and net;
    a second sheet carries the review trail. `stages` is the schedule's per-stage summary as the claim JSON
    lists it (engine.usecases.settlement.stage_summary): written as given onto 各阶段结算, never recomputed."""
    book = _Book()
    head = book.book.add_worksheet("结算申报汇总")
    contract = settlement.contract
    rows: list[tuple[str, Any]] = [
        ("合同", f"{contract.code} {contract.name}"), ("结算期", settlement.label),
        ("期间", f"{settlement.period_start.isoformat()} 至 {settlement.period_end.isoformat()}"),
        ("状态", SETTLEMENT_STATUS_NAMES.get(settlement.status, settlement.status)), ("分录数", figures.entries),
        ("提交截止", figures.due_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if figures.due_at else "未设置"),
        ("是否逾期", {True: "是", False: "否", None: "—"}[figures.late]),
        ("逾期扣款比例", figures.penalty_rate), ("考核得分", figures.score if figures.score is not None else "—"),
        ("考核扣款比例", figures.deduction_rate if figures.deduction_rate is not None else "—"),
        ("结算阶段", settlement.stage or "—"), ("考核等级", getattr(figures, "grade", None) or "—"),
        ("修改稿逾期", "是" if getattr(figures, "revision_late", False) else "否"),
        ("月报逾期扣款（元）", getattr(figures, "other_deductions", Decimal("0"))),
    ]
    for r, (label, value) in enumerate(rows):
        head.write(r, 0, label, book.bold)
        if isinstance(value, Decimal):
            head.write_number(r, 1, float(value))
        else:
            head.write(r, 1, value)
    base = len(rows) + 1
    for i, (key, label) in enumerate(CLAIM_SUMMARY):
        head.write(base + i, 0, label, book.bold)
        head.write_number(base + i, 1, float(getattr(figures, key)), book.bold_money)
    head.set_column(0, 0, 18)
    head.set_column(1, 1, 40)
    if stages:
        _stages_sheet(book, stages)
    f = WorkloadFilter(settlement_id=settlement.id, include_cancelled=settlement.status == "approved")
    book.detail_sheet(session, f, "结算申报明细")
    notes = book.book.add_worksheet("审核意见")
    notes.write_row(0, 0, ["轮次", "类型", "分录号", "意见/说明", "用户", "时间"], book.bold)
    query = select(SettlementNote).where(SettlementNote.settlement_id == settlement.id).order_by(SettlementNote.id)
    for i, note in enumerate(session.scalars(query), start=1):
        notes.write_row(i, 0, [note.round, NOTE_NAMES.get(note.kind, note.kind), note.entry_id or "",
                               note.text or "",
                               (note.user.display_name or note.user.username) if note.user else "",
                               note.at.astimezone(TZ).strftime("%Y-%m-%d %H:%M")])
    return book.close()


def _stages_sheet(book: _Book, stages: list[dict[str, Any]]) -> None:
    sheet = book.book.add_worksheet("各阶段结算")
    sheet.write_row(0, 0, STAGE_HEADERS, book.bold)
    for r, st in enumerate(stages, start=1):
        sheet.write_row(r, 0, [st["stage"], st["name"], st["period_start"], st["period_end"],
                               st["settlement_id"] if st["settlement_id"] is not None else "",
                               SETTLEMENT_STATUS_NAMES.get(st["status"], st["status"]) if st["status"] else "未开启"])
        for c, key in ((6, "claimed"), (7, "approved"), (8, "cumulative_approved")):
            if st[key] is None:
                sheet.write(r, c, "")
            else:
                sheet.write_number(r, c, st[key], book.money)
        sheet.write(r, 9, "是" if st["this"] else "")
    sheet.set_column(0, 1, 16)
    sheet.set_column(2, 3, 12)
    sheet.set_column(6, 8, 18)
