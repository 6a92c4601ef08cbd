"""Exports: the detail sheet with subtotals (XLSX/CSV), counts by month, progress against volumes and targets."""
from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import openpyxl
import pytest
from sqlalchemy import select

from api.extensions import db
from storage.models import ServiceLine
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
