"""Bulk intake of an item list: every bad row reported, nothing imported until clean, re-import adds none."""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

HEADER_ZH = ["事项名称", "事项编码", "需求部门", "服务类别", "渠道", "接入方式", "难度系数"]
ROWS = int(os.environ.get("ITEMGATE_IMPORT_ROWS", "2000"))


def item_list(n: int, bad: dict[int, tuple[int, str]] | None = None) -> list[list[str]]:
    """n data rows; `bad` maps a data-row index to (column index, wrong value)."""
    rows = []
    for i in range(n):
        row = [f"事项{i:05d}", f"KP-{i:05d}", "DA" if i % 2 else "DB", "1", "PC端、移动端" if i % 3 else "pc",
               "新增" if i % 4 else "优化迭代", "1.2" if i % 5 else ""]
        if bad and i in bad:
            column, value = bad[i]
            row[column] = value
        rows.append(row)
    return rows


def as_csv(rows: list[list[str]], header: list[str] = HEADER_ZH) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8-sig")


def as_xlsx(rows: list[list[str]], header: list[str]) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def upload(world: Any, body: bytes, filename: str, dry_run: bool = False, user: str = "pm") -> Any:
    url = "/api/v1/items/import?contract=SH-YWTB-2025" + ("&dry_run=1" if dry_run else "")
    return world.post(user, url, data={"file": (io.BytesIO(body), filename)}, content_type="multipart/form-data")


def count_items() -> int:
    from api.extensions import db
    from storage.models import WorkItem

    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(WorkItem))


@pytest.mark.timeout(900)  # ~20–30 ms per item when the machine is quiet; leave room when it is not
def test_two_thousand_rows_three_bad_then_fixed_then_again(world, app, capsys):
    # Data row i is spreadsheet row i + 2 (row 1 is the header).
    middle, last = ROWS * 2 // 5, ROWS - 1
    bad = {10: (2, "XX"), middle: (4, "传真"), last: (6, "九")}
    body = as_csv(item_list(ROWS, bad))
    r = upload(world, body, "事项清单.csv", dry_run=True)
    assert r.status_code == 422, r.get_json()
    problems = r.get_json()["errors"]
    assert [(p["row"], p["column"]) for p in problems] == [(12, "department"), (middle + 2, "channels"),
                                                           (last + 2, "difficulty")]
    assert "unknown department 'XX'" in problems[0]["problem"]
    assert "传真" in problems[1]["problem"]
    # Without dry-run the same file is refused whole.
    assert upload(world, body, "事项清单.csv").status_code == 422
    assert count_items() == 0

    fixed = as_csv(item_list(ROWS))
    r = upload(world, fixed, "事项清单.csv", dry_run=True)
    assert r.status_code == 200 and r.get_json()["to_create"] == ROWS and r.get_json()["created"] == 0
    assert count_items() == 0
    started = time.perf_counter()
    r = upload(world, fixed, "事项清单.csv")
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["created"] == ROWS
    assert count_items() == ROWS
    with capsys.disabled():
        print(f"\n[{app.config['ITEMGATE'].database_url.split(':')[0]}] imported {ROWS} items in {elapsed:.1f}s "
              f"({1000 * elapsed / ROWS:.1f} ms/item)")
    # Re-importing creates nothing twice.
    r = upload(world, fixed, "事项清单.csv")
    assert r.status_code == 200 and r.get_json()["created"] == 0 and r.get_json()["existing"] == ROWS
    assert count_items() == ROWS
    # Each item's process started: its first task is in the inbox.
    listed = world.get("impl", "/api/v1/tasks?scope=group&per_page=1").get_json()
    assert listed["total"] == ROWS


def test_xlsx_with_english_headers_and_header_problems(world):
    header = ["name", "code", "department", "service_line", "channels", "mode", "difficulty"]
    rows = [["单部门事项", "X-1", "DA", "1", "pc,mobile", "new", "1.5"],
            ["一件事", "X-2", "DB", "5", "pc", "iteration", "2"]]
    r = upload(world, as_xlsx(rows, header), "orders.xlsx")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["created"] == 2
    items = world.get("pm", "/api/v1/items").get_json()["items"]
    assert sorted((i["code"], i["service_line"], i["mode"], i["difficulty"]) for i in items) == [
        ("X-1", "1", "new", 1.5), ("X-2", "5", "iteration", 2.0)]
    # A missing column is reported against the header row.
    r = upload(world, as_csv(rows, ["name", "code", "department", "service_line", "channels", "difficulty"]),
               "x.csv")
    assert r.status_code == 422
    # Mode is needed by countable work only (a metered record has none): each such row says it lacks one.
    assert {"row": 2, "column": "mode", "problem": "empty"} in r.get_json()["errors"]
    assert {"row": 3, "column": "mode", "problem": "empty"} in r.get_json()["errors"]
    # Duplicate rows within a file, channel not offered by the line, unknown line: each reported.
    rows = [["a", "D-1", "DA", "1", "pc", "new", ""], ["b", "D-1", "DA", "1", "pc", "新增", ""],
            ["c", "D-2", "DA", "3", "kiosk", "new", ""], ["d", "D-3", "DA", "99", "pc", "new", ""]]
    problems = upload(world, as_csv(rows), "x.csv").get_json()["errors"]
    assert [(p["row"], p["column"]) for p in problems] == [(3, "code"), (4, "channels"), (5, "service_line")]
    assert upload(world, as_csv(rows), "x.csv", user="impl").status_code == 403
    assert upload(world, b"not a spreadsheet", "x.pdf").status_code == 422


def test_cli_import_with_progress(tmp_path: Path, app: Any, cli: Any):
    """One CLI session in the test's app: bad file refused, dry run, import, re-import."""
    from bpmn import CATALOG_DIR

    assert cli("catalog", "load", str(CATALOG_DIR / "shanghai.toml")).exit_code == 0
    for name, role, dept in (("pm1", "pm", None), ("r1", "dept_reviewer", "DA"), ("r2", "dept_reviewer", "DB")):
        args = ["users", "create", name, "--role", role, "--password-stdin"] + (["--department", dept] if dept else [])
        assert cli(*args, input="correct-horse-battery\n").exit_code == 0
    bad = tmp_path / "bad.csv"
    bad.write_bytes(as_csv(item_list(30, {4: (5, "maybe")})))
    result = cli("items", "import", str(bad), "--contract", "SH-YWTB-2025", "--as", "pm1")
    assert result.exit_code == 1 and "row 6, column mode:" in result.output
    good = tmp_path / "good.csv"
    good.write_bytes(as_csv(item_list(30)))
    args = ["items", "import", str(good), "--contract", "SH-YWTB-2025", "--as", "pm1"]
    result = cli(*args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "30 would be created" in result.output
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "created 30" in result.output and "30/30" in result.output  # the tqdm bar on stderr
    again = cli(*args)
    assert "created 0, 30 existed already" in again.output


def test_import_carries_every_condition_the_rules_read(world):
    header = ["事项名称", "事项编码", "需求部门", "服务类别", "渠道", "接入方式", "需数据质量检测", "协同部门",
              "亮证用证",
              "计量数量", "计量期间"]
    rows = [["单部门事项", "C-1", "DA", "1", "pc", "新增", "是", "", "", "", ""],
            ["一件事", "C-2", "DA", "5", "pc", "新增", "", "DA、DB", "", "", ""],
            ["营业执照", "C-3", "DA", "12", "", "新增", "", "", "亮证,用证", "", ""],
            ["身份认证调用量", "C-4", "DA", "9", "", "", "", "", "", "1,440,000,000", "2025-11"]]
    r = upload(world, as_csv(rows, header), "conditions.csv")
    assert r.status_code == 200, r.get_json()
    items = {i["code"]: i for i in world.get("pm", "/api/v1/items").get_json()["items"]}
    assert items["C-1"]["attributes"] == {"data_quality": True}
    assert items["C-2"]["attributes"] == {"departments": ["DA", "DB"]}
    assert items["C-3"]["attributes"] == {"parts": ["showing", "using"]} and items["C-3"]["channels"] == []
    assert items["C-4"]["units"] == 1440000000 and items["C-4"]["period"] == "2025-11"
    assert items["C-4"]["mode"] == "record"
    bad = [["x", "B-1", "DA", "9", "", "", "", "", "", "", ""],
           ["y", "B-2", "DA", "1", "pc", "新增", "也许", "", "", "5", ""]]
    problems = upload(world, as_csv(bad, header), "bad.csv").get_json()["errors"]
    assert [(p["row"], p["column"]) for p in problems] == [(2, "units"), (2, "period"), (3, "data_quality"),
                                                           (3, "units")]
