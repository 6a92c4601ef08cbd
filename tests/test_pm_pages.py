"""The PM's web pages: 登记事项 (inline Chinese validation, the process starts, the item opens), the spreadsheet
import (template, dry-run preview with every row's problems, a background job with progress, all or none) and
the item actions (cancel, rework, proposed difficulty). Both databases."""
from __future__ import annotations

import io
import re
from typing import Any

from sqlalchemy import func, select

from tests.test_web import Browser


def _items(app: Any) -> int:
    from api.extensions import db
    from storage.models import WorkItem

    return int(db.session.execute(select(func.count()).select_from(WorkItem)).scalar_one())


def _line_id(code: str) -> str:
    from api.extensions import db
    from storage.models import ServiceLine

    return str(db.session.execute(select(ServiceLine.id).where(ServiceLine.code == code)).scalar_one())


def test_register_page_validates_in_chinese_then_starts_the_process(world, app):
    pm = Browser(app, "pm")
    page = pm.get("/items/new")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "登记事项" in html and "建议难度系数" in html and 'data-field="departments"' in html
    # Nothing chosen: every problem is said next to its field, in Chinese, and nothing is written.
    bad = pm.post("/items/new", {"line": "", "name": "", "code": "", "difficulty": "x"})
    assert bad.status_code == 422
    text = bad.get_data(as_text=True)
    assert "请选择服务类别。" in text and "此项必填。" in text and "请输入有效的数字。" in text
    assert _items(app) == 0
    # The engine's own checks (a channel the line does not offer) come back inline too.
    wrong = pm.post("/items/new", {"line": _line_id("3"), "name": "国家平台事项", "code": "SH-W-1",
                                   "department": "DA", "channels": ["kiosk"], "mode": "new", "difficulty": "1.0"})
    assert wrong.status_code == 422
    assert "该服务类别不提供所选渠道。" in wrong.get_data(as_text=True)
    assert _items(app) == 0
    ok = pm.post("/items/new", {"line": _line_id("1"), "name": "驾驶证补领", "code": "SH-W-2", "department": "DA",
                                "channels": ["pc", "mobile"], "mode": "new", "difficulty": "1.2",
                                "complexity_note": "涉及两个系统对接",
                                "statement": (io.BytesIO(b"%PDF-1.4\n%%EOF\n"), "复杂度说明.pdf")},
                 content_type="multipart/form-data")
    assert ok.status_code == 302, ok.get_data(as_text=True)[:2000]
    item_url = ok.headers["Location"]
    item_id = int(re.search(r"/items/(\d+)$", item_url).group(1))
    item = world.get("pm", f"/api/v1/items/{item_id}").get_json()
    assert item["status"] == "active" and item["difficulty"] == 1.2
    assert [t["name"] for t in item["tasks"] if t["status"] == "ready"] == ["intake"]
    assert [a["kind"] for a in item["artefacts"]] == ["complexity_statement"]
    page = pm.get(item_url).get_data(as_text=True)
    assert "事项已登记，流程已启动" in page and "驾驶证补领" in page
    # The same code and mode again is refused on the form.
    again = pm.post("/items/new", {"line": _line_id("1"), "name": "驾驶证补领", "code": "SH-W-2", "department": "DA",
                                   "channels": ["pc"], "mode": "new", "difficulty": "1.0"})
    assert again.status_code == 422 and "已有相同编码" in again.get_data(as_text=True)


def test_register_a_one_thing_with_its_departments(world, app):
    pm = Browser(app, "pm")
    missing = pm.post("/items/new", {"line": _line_id("5"), "name": "新生儿出生一件事", "code": "SH-W-Y1",
                                     "department": "DA", "channels": ["pc"], "mode": "new", "difficulty": "1.0"})
    assert missing.status_code == 422 and "请选择参与部门。" in missing.get_data(as_text=True)
    ok = pm.post("/items/new", {"line": _line_id("5"), "name": "新生儿出生一件事", "code": "SH-W-Y1",
                                "department": "DA", "attr_departments": ["DB"], "channels": ["pc"], "mode": "new",
                                "difficulty": "1.0"})
    assert ok.status_code == 302, ok.get_data(as_text=True)[:2000]
    item_id = int(ok.headers["Location"].rsplit("/", 1)[1])
    item = world.get("pm", f"/api/v1/items/{item_id}").get_json()
    assert item["attributes"]["departments"] == ["DA", "DB"]  # the lead department takes part


def test_register_a_metered_record_with_units_and_period(world, app):
    """A metered line (9: API calls) takes units and a month instead of channels, mode and difficulty; its
    problems come back inline in Chinese from the same use case as POST /api/v1/items."""
    pm = Browser(app, "pm")
    page = pm.get("/items/new").get_data(as_text=True)
    assert 'name="units"' in page and 'type="month"' in page and 'data-kind="metered"' in page
    base = {"line": _line_id("9"), "name": "统一身份认证 2025年11月", "code": "SH-IAM-W-2025-11", "department": "DA",
            # What a browser without script sends: the countable fields' defaults, which a record does not read.
            "mode": "new", "difficulty": "1.0"}
    bad = pm.post("/items/new", {**base, "units": "1440000000", "period": "2025-13"})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert "计量期间应为年月，如 2026-11。" in html and 'id="err-period"' in html and _items(app) == 0
    # The chosen line decides what shows without script: no channels, mode or difficulty for a record.
    assert re.search(r'id="r-channels"[^>]*\bhidden\b', html) and re.search(r'id="r-mode"[^>]*\bhidden\b', html)
    assert re.search(r'data-field="units"[^>]*>', html).group(0).count("hidden") == 0
    assert 'value="1440000000"' in html  # what was typed stays
    missing = pm.post("/items/new", {**base, "units": "", "period": ""})
    text = missing.get_data(as_text=True)
    assert missing.status_code == 422
    assert "请填写计量数量（大于 0 的数字）。" in text and "请选择计量期间（年-月）。" in text
    for units in ("0", "-5", "abc"):
        r = pm.post("/items/new", {**base, "units": units, "period": "2025-11"})
        assert r.status_code == 422 and 'id="err-units"' in r.get_data(as_text=True), units
    assert _items(app) == 0
    ok = pm.post("/items/new", {**base, "units": "1,440,000,000", "period": "2025-11"})
    assert ok.status_code == 302, ok.get_data(as_text=True)[:3000]
    item_id = int(ok.headers["Location"].rsplit("/", 1)[1])
    item = world.get("pm", f"/api/v1/items/{item_id}").get_json()
    assert item["mode"] == "record" and item["units"] == 1440000000 and item["period"] == "2025-11"
    assert item["channels"] == [] and [t["name"] for t in item["tasks"] if t["status"] == "ready"] == ["record"]
    page = pm.get(f"/items/{item_id}").get_data(as_text=True)
    assert re.search(r'id="item-units">1,440,000,000 次接口调用量<', page)
    assert 'id="item-period">2025-11<' in page
    # A record counts its units at 1.00: there is no difficulty to adjust.
    assert 'id="difficulty-form"' not in page
    refused = pm.post(f"/items/{item_id}/difficulty", {"difficulty": "2.0", "note": "调高"})
    assert refused.status_code == 302
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["difficulty"] == 1.0
    # A person-month line takes a decimal.
    months = pm.post("/items/new", {**base, "line": _line_id("18"), "code": "SH-PM-W-2025-11", "units": "2.5",
                                    "period": "2025-11"})
    assert months.status_code == 302, months.get_data(as_text=True)[:3000]
    months_id = int(months.headers["Location"].rsplit("/", 1)[1])
    assert world.get("pm", f"/api/v1/items/{months_id}").get_json()["units"] == 2.5


def test_a_line_priced_without_channels_is_registered_without_them(world, app):
    """Line 13 (per interface) has no channels: the form hides them, and what a script-less browser still sends
    is not read (the API would refuse channels for it)."""
    pm = Browser(app, "pm")
    base = {"line": _line_id("13"), "name": "电子证照接口", "code": "SH-IF-W-1", "department": "DA", "mode": "new",
            "difficulty": "1.0"}
    bad = pm.post("/items/new", {**base, "mode": ""})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422 and "请选择接入方式。" in html and "请至少选择一个渠道。" not in html
    assert re.search(r'id="r-channels"[^>]*\bhidden\b', html) and not re.search(r'id="r-mode"[^>]*\bhidden\b', html)
    ok = pm.post("/items/new", {**base, "channels": ["pc"]})
    assert ok.status_code == 302, ok.get_data(as_text=True)[:3000]
    item_id = int(ok.headers["Location"].rsplit("/", 1)[1])
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["channels"] == []


def test_api_refuses_attributes_the_line_cannot_use(world):
    r = world.post("pm", "/api/v1/items", json={
        "contract": "SH-YWTB-2025", "service_line": "5", "name": "一件事", "code": "SH-W-Y2", "department": "DA",
        "channels": ["pc"], "mode": "new", "attributes": {"departments": ["DB", "NOPE"]}})
    assert r.status_code == 422
    assert "attributes.departments" in r.get_json()["errors"]
    r = world.post("pm", "/api/v1/items", json={
        "contract": "SH-YWTB-2025", "service_line": "12", "name": "证照", "code": "SH-W-Z1", "department": "DA",
        "channels": ["pc"], "mode": "new", "attributes": {"parts": ["flying"]}})
    assert r.status_code == 422 and "attributes.parts" in r.get_json()["errors"]


def _xlsx(rows: list[list[Any]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["事项名称", "事项编码", "需求部门", "服务类别", "接入渠道", "接入方式", "难度系数"])
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_import_previews_every_row_then_imports_in_the_background(world, app, monkeypatch):
    from openpyxl import load_workbook
    from sqlalchemy.orm import sessionmaker

    from api.extensions import db
    from engine.usecases.jobs import run_job
    from storage.unit_of_work import transactions

    monkeypatch.setitem(app.config, "EXPORT_JOBS_THREAD", False)
    pm = Browser(app, "pm")
    assert pm.get("/items/import").status_code == 200
    template = pm.get("/items/import/template.xlsx")
    assert template.status_code == 200
    book = load_workbook(io.BytesIO(template.data))
    assert [c.value for c in book.worksheets[0][1]] == ["事项名称", "事项编码", "需求部门", "服务类别", "接入渠道",
                                                        "接入方式", "难度系数", "计量数量", "计量期间"]
    bad = _xlsx([["驾驶证补领", "SH-I-1", "DA", "1", "PC端、移动端", "新增接入", 1.2],
                 ["无部门", "SH-I-2", "ZZ", "1", "PC端", "新增接入", None],
                 ["坏渠道", "SH-I-3", "DA", "3", "自助终端", "优化", None]])
    r = pm.post("/items/import/preview", {"contract": "SH-YWTB-2025", "file": (io.BytesIO(bad), "清单.xlsx")},
                content_type="multipart/form-data")
    assert r.status_code == 422
    html = r.get_data(as_text=True)
    assert "未导入任何事项" in html and "未知的需求部门。" in html and "该服务类别不提供此渠道。" in html
    assert 'data-row="2" class' not in html and 'class="row-ok" data-row="2"' in html
    assert 'class="row-bad" data-row="3"' in html and 'class="row-bad" data-row="4"' in html
    assert "import-start" not in html and _items(app) == 0
    good = _xlsx([["驾驶证补领", "SH-I-1", "DA", "1", "PC端、移动端", "新增接入", 1.2],
                  ["户籍迁移", "SH-I-2", "DB", "1", "PC端", "优化迭代", None]])
    r = pm.post("/items/import/preview", {"contract": "SH-YWTB-2025", "file": (io.BytesIO(good), "清单.xlsx")},
                content_type="multipart/form-data")
    assert r.status_code == 200 and "将新登记 2 项" in r.get_data(as_text=True)
    assert _items(app) == 0  # the preview is a dry run
    started = pm.post("/items/import/start")
    assert started.status_code == 302
    job_url = started.headers["Location"]
    job_id = int(job_url.rsplit("/", 1)[1])
    assert "排队中" in pm.get(job_url).get_data(as_text=True)
    assert run_job(transactions(sessionmaker(bind=db.engine, expire_on_commit=False)), app.extensions["itemgate_store"],
                   job_id) == "done"
    db.session.expire_all()
    page = pm.get(job_url).get_data(as_text=True)
    assert "导入完成：共 2 行，新登记 2 项" in page and 'value="2"' in page
    assert _items(app) == 2
    # Another PM's job is not mine to see; the implementer has no import page at all.
    assert Browser(app, "impl").get("/items/import").status_code == 403


def test_import_job_that_fails_writes_nothing(world, app, monkeypatch):
    """A row that turns bad between preview and import (its department deleted) fails the job: nothing written."""
    from sqlalchemy.orm import sessionmaker

    from api.extensions import db
    from engine.usecases.jobs import run_job
    from storage.models import Department
    from storage.unit_of_work import transactions

    monkeypatch.setitem(app.config, "EXPORT_JOBS_THREAD", False)
    db.session.add(Department(code="DX", name="临时部门"))
    db.session.commit()
    pm = Browser(app, "pm")
    rows = _xlsx([["甲", "SH-J-1", "DA", "1", "PC端", "新增接入", None],
                  ["乙", "SH-J-2", "DX", "1", "PC端", "新增接入", None]])
    r = pm.post("/items/import/preview", {"contract": "SH-YWTB-2025", "file": (io.BytesIO(rows), "清单.xlsx")},
                content_type="multipart/form-data")
    assert r.status_code == 200
    job_id = int(pm.post("/items/import/start").headers["Location"].rsplit("/", 1)[1])
    db.session.execute(Department.__table__.delete().where(Department.code == "DX"))
    db.session.commit()
    assert run_job(transactions(sessionmaker(bind=db.engine, expire_on_commit=False)), app.extensions["itemgate_store"],
                   job_id) == "failed"
    db.session.expire_all()
    page = pm.get(f"/items/import/jobs/{job_id}").get_data(as_text=True)
    assert "导入失败，未导入任何事项。" in page and "未知的需求部门。" in page
    assert _items(app) == 0


def test_item_actions_for_the_pm(world, app):
    item_id = world.new_item("SH-ACT-1")["id"]
    pm = Browser(app, "pm")
    page = pm.get(f"/items/{item_id}").get_data(as_text=True)
    assert "调整建议难度系数" in page and "取消事项" in page
    r = pm.post(f"/items/{item_id}/difficulty", {"difficulty": "1.5", "note": "接口更多"})
    assert r.status_code == 302
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["difficulty"] == 1.5
    world.complete_task_as("impl", item_id, "intake", {"summary": "新增接入"})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.2", "complexity_note": "两系统"})
    r = pm.post(f"/items/{item_id}/difficulty", {"difficulty": "2", "note": "太晚了"})
    assert "已确认" in pm.get(r.headers["Location"]).get_data(as_text=True)
    # Rework: the completed steps are offered; a missing reason is said in Chinese.
    page = pm.get(f"/items/{item_id}").get_data(as_text=True)
    assert 'value="intake"' in page
    r = pm.post(f"/items/{item_id}/rework", {"to": "intake", "reason": ""})
    assert "请填写原因" in pm.get(r.headers["Location"]).get_data(as_text=True)
    pm.post(f"/items/{item_id}/rework", {"to": "intake", "reason": "需求函有误"})
    assert [t["name"] for t in world.open_tasks(item_id)] == ["intake"]
    # Reassign: hand an open task to a colleague from the item page.
    task_id = world.open_tasks(item_id)[0]["id"]
    r = pm.post(f"/tasks/{task_id}/handover", {"to": "impl2", "next": f"/items/{item_id}"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/items/{item_id}")
    assert world.open_tasks(item_id)[0]["assignee"] == "impl2"
    r = pm.post(f"/items/{item_id}/cancel", {"reason": "部门撤回需求"})
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["status"] == "cancelled"
    # Not for the implementer.
    assert Browser(app, "impl").post(f"/items/{item_id}/cancel", {"reason": "x"}).status_code == 403


def test_the_pm_pages_in_english(world, app):
    pm = Browser(app, "pm")
    page = pm.get("/items/new?lang=en").get_data(as_text=True)
    assert "Register an item" in page and "Register and start the process" in page and "登记并启动流程" not in page
    page = pm.get("/items/import").get_data(as_text=True)
    assert "Step 1: upload and preview" in page and "Download the import template (XLSX)" in page
    item_id = world.new_item("SH-EN-1")["id"]
    page = pm.get(f"/items/{item_id}").get_data(as_text=True)
    assert "Cancel the item" in page and "Item registered" in page
    assert "Service orders" in Browser(app, "rev_a").get("/service-orders/new?lang=en").get_data(as_text=True)
