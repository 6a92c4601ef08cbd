"""The PM's and the requesters' work in headless Chromium: register an item, import a spreadsheet (a bad row, then a
good file, with the background job's progress), a department filing a service order that the PM accepts, and the
auditor finding a settlement claim in the inbox. Screenshots at 1366×768 go outside the repository
(ITEMGATE_SHOTS, default /tmp/shots-18a). SQLite only: the browser exercises the web layer."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import pytest

from api.demo import demo_pdf
from tests.browser.test_inbox_flow import open_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def shots() -> Path:
    path = Path(os.environ.get("ITEMGATE_SHOTS", "/tmp/shots-18a"))  # noqa: S108 - screenshots, not secrets
    path.mkdir(parents=True, exist_ok=True)
    return path


def xlsx(rows: list[list[Any]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["事项名称", "事项编码", "需求部门", "服务类别", "接入渠道", "接入方式", "难度系数"])
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def choose_line(page: Any, code: str) -> None:
    value = page.locator("#r-line option").filter(has_text=re.compile(rf"^{code} · ")).first.get_attribute("value")
    page.get_by_label("合同与服务类别").select_option(value)


def test_pm_registers_an_item(chromium: Any, live_url: str, world: Any, shots: Path) -> None:
    pm = open_page(chromium, live_url)
    sign_in(pm, "pm")
    pm.goto("/items")
    pm.locator("#register-link").click()
    pm.wait_for_url(re.compile(r"/items/new$"))
    # Before a line is chosen no line-specific field shows; a one-thing asks for its departments.
    assert not pm.locator('.line-field[data-field="departments"]').is_visible()
    choose_line(pm, "5")
    assert pm.locator('.line-field[data-field="departments"]').is_visible()
    choose_line(pm, "3")
    assert not pm.locator('.line-field[data-field="departments"]').is_visible()
    assert pm.locator('label[data-channel="kiosk"] input').is_disabled()  # line 3 is not offered on kiosks
    pm.screenshot(path=str(shots / "pm-register.png"), full_page=True)
    # Submitting without name and code: the errors are said next to the fields, in Chinese.
    pm.get_by_role("button", name="登记并启动流程").click()
    pm.wait_for_load_state()
    assert pm.locator("#err-name").inner_text() == "此项必填。"
    assert pm.locator("#err-code").inner_text() == "此项必填。"
    pm.screenshot(path=str(shots / "pm-register-errors.png"), full_page=True)
    choose_line(pm, "1")
    pm.get_by_label("需求部门").select_option("DA")
    pm.get_by_label("事项名称").fill("驾驶证补领")
    pm.get_by_label("事项编码").fill("SH-PW-1")
    pm.locator('input[name=channels][value=pc]').check()
    pm.locator('input[name=channels][value=mobile]').check()
    pm.get_by_label("建议难度系数").fill("1.2")
    pm.get_by_label("复杂度说明", exact=True).fill("涉及公安与交通两个系统对接")
    pm.get_by_role("button", name="登记并启动流程").click()
    pm.wait_for_url(re.compile(r"/items/\d+$"))
    assert pm.locator(".flash-ok").inner_text() == "事项已登记，流程已启动"
    assert "驾驶证补领" in pm.locator("#item-title").inner_text()
    assert pm.locator("#pm-actions").is_visible()
    pm.screenshot(path=str(shots / "pm-item.png"), full_page=True)


def test_pm_imports_a_bad_file_then_a_good_one(chromium: Any, live_url: str, world: Any, shots: Path) -> None:
    pm = open_page(chromium, live_url)
    sign_in(pm, "pm")
    pm.goto("/items")
    pm.locator("#import-link").click()
    pm.wait_for_url(re.compile(r"/items/import$"))
    with pm.expect_download() as download:
        pm.locator("#template-link").click()
    assert download.value.suggested_filename.endswith(".xlsx")
    bad = xlsx([["驾驶证补领", "SH-PI-1", "DA", "1", "PC端、移动端", "新增接入", 1.2],
                ["无部门", "SH-PI-2", "ZZ", "1", "PC端", "新增接入", None]])
    pm.set_input_files("#imp-file", files=[{"name": "清单.xlsx", "mimeType": XLSX, "buffer": bad}])
    pm.get_by_role("button", name="上传并预览").click()
    pm.wait_for_load_state()
    assert "未导入任何事项" in pm.locator("#preview-summary").inner_text()
    assert "未知的需求部门" in pm.locator('tr[data-row="3"] .row-result').inner_text()
    assert "通过" in pm.locator('tr[data-row="2"] .row-result').inner_text()
    assert pm.locator("#import-start").count() == 0
    pm.screenshot(path=str(shots / "pm-import-errors.png"), full_page=True)
    good = xlsx([["驾驶证补领", "SH-PI-1", "DA", "1", "PC端、移动端", "新增接入", 1.2],
                 ["户籍迁移", "SH-PI-2", "DB", "1", "PC端", "优化迭代", None],
                 ["社保卡申领", "SH-PI-3", "DB", "2", "自助终端", "新增接入", None]])
    pm.set_input_files("#imp-file", files=[{"name": "清单.xlsx", "mimeType": XLSX, "buffer": good}])
    pm.get_by_role("button", name="上传并预览").click()
    pm.wait_for_load_state()
    assert "将新登记 3 项" in pm.locator("#preview-summary").inner_text()
    pm.screenshot(path=str(shots / "pm-import-preview.png"), full_page=True)
    pm.locator("#import-start").click()
    pm.wait_for_url(re.compile(r"/items/import/jobs/\d+$"))
    pm.locator('#import-job[data-status="done"]').wait_for(timeout=30_000)
    assert "新登记 3 项" in pm.locator("#job-result").inner_text()
    assert pm.locator("#job-progress").get_attribute("value") == "3"
    pm.screenshot(path=str(shots / "pm-import-done.png"), full_page=True)
    assert world.get("pm", "/api/v1/items").get_json()["total"] == 3


def test_department_files_a_service_order_and_the_pm_accepts(chromium: Any, live_url: str, world: Any,
                                                             shots: Path) -> None:
    rev = open_page(chromium, live_url)
    sign_in(rev, "rev_a")
    rev.goto("/service-orders")
    rev.locator("#order-new-link").click()
    rev.wait_for_url(re.compile(r"/service-orders/new$"))
    rev.get_by_label("需求名称").fill("出生医学证明接入")
    rev.get_by_label("建议服务类别（可选）").select_option("1")
    rev.locator('input[name=channels][value=pc]').check()
    rev.set_input_files("#o-file", files=[{"name": "需求函.pdf", "mimeType": "application/pdf",
                                           "buffer": demo_pdf("需求函 出生医学证明")}])
    rev.get_by_label("需求说明").fill("请于本季度内完成 PC 端接入。")
    rev.screenshot(path=str(shots / "dept-service-order-new.png"), full_page=True)
    rev.get_by_role("button", name="提交", exact=True).click()
    rev.wait_for_url(re.compile(r"/service-orders/\d+$"))
    assert rev.locator("#order-status").inner_text() == "待受理"

    pm = open_page(chromium, live_url)
    sign_in(pm, "pm")
    waiting = pm.locator("#service-orders-waiting")
    waiting.wait_for()
    pm.screenshot(path=str(shots / "pm-inbox.png"), full_page=True)
    waiting.get_by_role("link", name="出生医学证明接入").click()
    pm.wait_for_url(re.compile(r"/service-orders/\d+$"))
    pm.get_by_label("事项编码").fill("SH-SO-PW1")
    pm.screenshot(path=str(shots / "pm-service-order.png"), full_page=True)
    pm.locator("#accept-button").click()
    pm.wait_for_url(re.compile(r"/items/\d+$"))
    assert "来源运营服务单" in pm.locator("#source-order").inner_text()
    assert "rev_a" in pm.locator("#source-order").inner_text()
    assert "需求函" in pm.locator("table.artefacts").inner_text()

    rev.reload()
    assert rev.locator("#order-status").inner_text() == "已受理"


def test_auditor_finds_the_claim_in_the_inbox(chromium: Any, live_url: str, world: Any, shots: Path) -> None:
    from tests.settlement_helpers import adhoc_contract, completed_items
    from tests.test_settlement import CURRENT

    completed_items(2, prefix="PWA")
    adhoc_contract()  # an ad-hoc period of today's dates (stage claims: test_contract_settlement.py)
    sid = world.post("pm", "/api/v1/settlements", json=CURRENT).get_json()["id"]
    assert world.post("pm", f"/api/v1/settlements/{sid}/submit", json={}).status_code == 200
    auditor = open_page(chromium, live_url)
    sign_in(auditor, "auditor")
    steps = auditor.locator("#settlement-steps")
    steps.wait_for()
    assert "第三方审核申报材料" in steps.inner_text()
    auditor.screenshot(path=str(shots / "auditor-inbox.png"), full_page=True)
    steps.locator(f'tr[data-settlement="{sid}"] a').click()
    auditor.wait_for_url(re.compile(rf"/settlements/{sid}$"))
    auditor.screenshot(path=str(shots / "auditor-settlement.png"), full_page=True)


def test_pm_picks_the_rework_step_in_the_diagram(chromium: Any, live_url: str, world: Any, shots: Path) -> None:
    item_id = world.new_item("SH-PW-RW")["id"]
    world.complete_task_as("impl", item_id, "intake", {"summary": "新增接入"})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.2", "complexity_note": "两系统"})
    pm = open_page(chromium, live_url)
    sign_in(pm, "pm")
    pm.goto(f"/items/{item_id}")
    assert pm.locator("#rw-to").input_value() == "confirm_difficulty"  # the latest completed step first
    pm.locator('.itemgate-diagram .ig-pickable[data-element-id="intake"]').click()
    assert pm.locator("#rw-to").input_value() == "intake"
    pm.locator("#rw-reason").fill("需求函版本有误")
    pm.screenshot(path=str(shots / "pm-rework.png"), full_page=True)
    pm.get_by_role("button", name="退回重做").click()
    pm.wait_for_url(re.compile(rf"/items/{item_id}$"))
    assert pm.locator(".flash-ok").inner_text() == "已退回到所选环节重做"
    assert [t["name"] for t in world.open_tasks(item_id)] == ["intake"]
