"""The web inbox in headless Chromium: the implement → review → return → resubmit → approve loop, as people
do it, plus CSRF and department scope. SQLite only: the browser exercises the web layer, not the database."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from api.demo import demo_pdf
from tests.browser.conftest import VIEWPORT
from tests.conftest import PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

TIMEOUT_MS = 15_000


def open_page(chromium: Any, base: str) -> Any:
    context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN", base_url=base)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def sign_in(page: Any, username: str) -> None:
    page.goto("/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/inbox"))


def upload(page: Any, kind: str, name: str, body: bytes, mime: str = "application/pdf") -> None:
    """Choose a file in the gate checklist row; the page's script sends it and swaps in the new checklist
    without leaving the page."""
    page.set_input_files(f"#file-{kind}", files=[{"name": name, "mimeType": mime, "buffer": body}])
    page.locator(f'.gate-row.present[data-kind="{kind}"] .gate-file', has_text=name).wait_for()


def stage_count(page: Any, stage: str) -> int:
    row = page.locator(f'#by-stage-table tr[data-key="{stage}"] .n-active')
    return int(row.inner_text()) if row.count() else 0


@pytest.fixture
def survey_ready(world: Any) -> int:
    """An item of department DA whose survey step waits for the implementers. Its line requires the survey form
    and sorting list, as Kaiping's survey steps do (in Shanghai they are optional working documents)."""
    from sqlalchemy import select

    from api.extensions import db
    from storage.models import ServiceLine

    line = db.session.execute(select(ServiceLine).where(ServiceLine.code == "1")).scalar_one()
    line.gates = {**line.gates, "survey": [{"kind": "survey_form", "when": {}}, {"kind": "sorting_list", "when": {}}]}
    db.session.commit()
    item_id = world.new_item("SH-BROWSER-1", department="DA", channels=["pc", "mobile"])["id"]
    world.complete_task_as("impl", item_id, "intake", {"summary": "新增接入"})
    world.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.2", "complexity_note": "两系统对接"})
    return item_id


def test_implement_review_return_resubmit_approve(chromium: Any, live_url: str, survey_ready: int,
                                                 screenshot_dir: Path) -> None:
    item_id = survey_ready
    impl = open_page(chromium, live_url)
    sign_in(impl, "impl")

    # The implementer finds the step in the group inbox and claims it.
    row = impl.locator("table.inbox tbody tr", has_text="SH-BROWSER-1")
    row.wait_for()
    assert "调研与要素梳理" in row.inner_text()
    impl.screenshot(path=str(screenshot_dir / "inbox.png"))
    row.get_by_role("button", name=re.compile("认领")).click()
    impl.wait_for_url(re.compile(r"/tasks/\d+$"))
    task_url = impl.url
    assert impl.locator(".flash-ok").inner_text() == "已认领任务"

    # Blocked by the gate: the button says why, and the server refuses even if the button is forced.
    complete = impl.locator("#complete-button")
    assert complete.is_disabled()
    reason = impl.locator("#complete-reason").inner_text()
    assert "调研表" in reason and "事项梳理清单" in reason
    impl.eval_on_selector("#complete-button", "b => { b.disabled = false; }")
    impl.get_by_label("梳理事项数").fill("3")
    with impl.expect_navigation() as nav:
        complete.click()
    assert nav.value.status == 422
    assert "以下交付物尚未上传" in impl.locator("#complete-reason").inner_text()

    # Client-side checks refuse a wrong type before sending anything.
    impl.set_input_files("#file-survey_form", files=[{"name": "tool.exe", "mimeType": "application/octet-stream",
                                                       "buffer": b"MZ\x90\x00"}])
    msg = impl.locator('.gate-row[data-kind="survey_form"] .upload-msg')
    assert msg.inner_text() == "不支持此文件类型"

    upload(impl, "survey_form", "调研表.pdf", demo_pdf("survey"))
    impl.screenshot(path=str(screenshot_dir / "task.png"))
    upload(impl, "sorting_list", "梳理清单.pdf", demo_pdf("sorting v1"))
    assert impl.locator("#complete-button").is_enabled()
    impl.get_by_label("梳理事项数").fill("3")
    impl.locator("#complete-button").click()
    impl.wait_for_url(re.compile(r"/inbox"))
    assert impl.locator(".flash-ok").inner_text() == "任务已提交"

    # The PM's dashboard shows the item in the survey stage.
    pm = open_page(chromium, live_url)
    sign_in(pm, "pm")
    pm.goto("/dashboard")
    assert stage_count(pm, "survey") == 1 and stage_count(pm, "design") == 0

    # The department reviewer returns it with a comment (which the form insists on).
    rev = open_page(chromium, live_url)
    sign_in(rev, "rev_a")
    rev.locator("table.inbox a.task-link", has_text="部门确认调研梳理结果").click()
    rev.wait_for_url(re.compile(r"/tasks/\d+$"))
    assert rev.locator(".review-list").inner_text().count(".pdf") == 2
    rev.screenshot(path=str(screenshot_dir / "review.png"))
    # PDFs preview inline (headless Chromium has no PDF viewer to draw them, so check what is served).
    rev.locator(".preview summary").first.click()
    frame = rev.locator(".preview iframe").first
    frame.wait_for()
    served = rev.request.get(frame.get_attribute("src"))
    assert served.ok and served.headers["content-type"] == "application/pdf"
    assert served.headers["content-disposition"].startswith("inline;")
    rev.get_by_label("退回修改").check()
    with rev.expect_navigation() as nav:
        rev.locator("#complete-button").click()
    assert nav.value.status == 422
    assert "退回时必须填写审核意见" in rev.locator(".field-error").inner_text()
    rev.get_by_label("审核意见").fill("梳理清单缺少材料字段")
    rev.locator("#complete-button").click()
    rev.wait_for_url(re.compile(r"/inbox"))

    # The returned step comes back to the implementer who did it, already claimed, with the comment.
    impl.goto("/inbox?scope=mine")
    row = impl.locator("table.inbox tbody tr", has_text="SH-BROWSER-1")
    assert row.locator(".badge-returned").inner_text() == "退回"
    row.locator("a.task-link").click()
    impl.wait_for_url(re.compile(r"/tasks/\d+$"))
    assert impl.url != task_url, "a return creates a new rework task"
    assert impl.locator(".return-comment").inner_text() == "梳理清单缺少材料字段"
    assert impl.locator("#claim-button").count() == 0 and impl.locator("#unclaim-button").count() == 1
    assert impl.get_by_label("梳理事项数").input_value() == "3"  # the earlier answer is offered again
    upload(impl, "sorting_list", "梳理清单-修订.pdf", demo_pdf("sorting v2"))
    assert "版本 2" in impl.locator('.gate-row[data-kind="sorting_list"]').inner_text()
    impl.get_by_label("梳理事项数").fill("4")
    impl.locator("#complete-button").click()
    impl.wait_for_url(re.compile(r"/inbox"))

    # The reviewer approves the resubmission.
    rev.goto("/inbox")
    rev.locator("table.inbox a.task-link", has_text="部门确认调研梳理结果").click()
    rev.wait_for_url(re.compile(r"/tasks/\d+$"))
    rev.get_by_label("确认通过").check()
    rev.locator("#complete-button").click()
    rev.wait_for_url(re.compile(r"/inbox"))
    assert rev.locator(".flash-ok").inner_text() == "任务已提交"

    # The PM dashboard's counts move on: the item left the survey stage for design.
    pm.reload()
    assert stage_count(pm, "survey") == 0 and stage_count(pm, "design") == 1
    pm.screenshot(path=str(screenshot_dir / "dashboard.png"))

    # The item page's diagram highlights the new current step and marks the completed ones.
    pm.goto(f"/items/{item_id}")
    assert pm.locator('#item-stage').inner_text() == "功能设计"
    assert pm.locator('svg [data-element-id="design"].ig-current').count() == 1
    for done in ("intake", "confirm_difficulty", "survey_sorting", "confirm_survey"):
        assert pm.locator(f'svg [data-element-id="{done}"].ig-done').count() == 1, done
    timeline = pm.locator("table.timeline").inner_text()
    assert "梳理清单缺少材料字段" in timeline and "退回修改" in timeline and "确认通过" in timeline
    assert pm.locator("table.artefacts").inner_text().count("v2") == 1
    pm.screenshot(path=str(screenshot_dir / "item.png"))
    pm.screenshot(path=str(screenshot_dir / "item-full.png"), full_page=True)
    pm.get_by_role("button", name="放大查看").click()
    assert pm.locator("#diagram.zoomed").count() == 1
    pm.locator("#diagram").screenshot(path=str(screenshot_dir / "item-diagram-zoomed.png"))
    # The same pages in English, once switched.
    impl.goto("/inbox?lang=en")
    assert impl.locator("h1").inner_text() == "Inbox"
    impl.screenshot(path=str(screenshot_dir / "inbox-en.png"))
    for page in (impl, pm, rev):
        page.context.close()


def test_csrf_token_missing_is_refused(chromium: Any, live_url: str, survey_ready: int) -> None:
    page = open_page(chromium, live_url)
    sign_in(page, "impl")
    row = page.locator("table.inbox tbody tr", has_text="SH-BROWSER-1")
    # A forged form: the same claim, without the page's token.
    page.eval_on_selector("table.inbox tbody tr form[action$='/claim'] input[name=csrf_token]", "i => i.remove()")
    with page.expect_navigation() as nav:
        row.get_by_role("button", name=re.compile("认领")).click()
    assert nav.value.status == 400
    assert "安全令牌" in page.locator("main").inner_text()
    page.goto("/inbox?scope=group")
    assert "未认领" in page.locator("table.inbox tbody tr", has_text="SH-BROWSER-1").inner_text()
    page.context.close()


def test_reviewer_of_another_department_gets_404(chromium: Any, live_url: str, survey_ready: int,
                                                screenshot_dir: Path) -> None:
    page = open_page(chromium, live_url)
    page.goto("/login")
    page.screenshot(path=str(screenshot_dir / "login.png"))
    sign_in(page, "rev_b")
    response = page.goto(f"/items/{survey_ready}")
    assert response is not None and response.status == 404
    assert "页面不存在，或您无权访问" in page.locator("main").inner_text()
    page.screenshot(path=str(screenshot_dir / "error-404.png"))
    assert "SH-BROWSER-1" not in page.content()
    page.goto("/items")
    assert "SH-BROWSER-1" not in page.locator("main").inner_text()
    page.context.close()


def test_typed_input_survives_an_upload_and_a_reload(chromium: Any, live_url: str, survey_ready: int) -> None:
    """People type first and attach last: uploading keeps the page (and the form), and a reload restores the
    server-side draft."""
    impl = open_page(chromium, live_url)
    sign_in(impl, "impl")
    impl.goto("/inbox?scope=group")
    impl.locator("table.inbox tbody tr", has_text="SH-BROWSER-1").get_by_role("button", name=re.compile("认领")).click()
    impl.wait_for_url(re.compile(r"/tasks/\d+$"))
    task_url = impl.url
    impl.get_by_label("梳理事项数").fill("12")
    impl.get_by_label("备注").fill("已与部门核对十二项")
    impl.evaluate("window.__stayed = true")  # gone if the page were loaded again
    upload(impl, "survey_form", "调研表.pdf", demo_pdf("survey"))
    assert impl.evaluate("window.__stayed === true")
    assert impl.get_by_label("梳理事项数").input_value() == "12"
    assert impl.get_by_label("备注").input_value() == "已与部门核对十二项"
    assert impl.locator("#complete-button").is_disabled()  # one file still missing
    impl.locator("#draft-status", has_text="草稿已自动保存").wait_for()
    # A reload (or the same link on another device) brings the draft back.
    impl.goto(task_url)
    assert impl.get_by_label("梳理事项数").input_value() == "12"
    assert impl.get_by_label("备注").input_value() == "已与部门核对十二项"
    assert "已恢复" in impl.locator("#draft-status").inner_text()
    upload(impl, "sorting_list", "梳理清单.pdf", demo_pdf("sorting"))
    assert impl.locator("#complete-button").is_enabled()  # the button follows the checklist without a reload
    impl.locator("#complete-button").click()
    impl.wait_for_url(re.compile(r"/inbox"))
    # Submitted: the draft is gone, and the finished step shows what was entered.
    from api.extensions import db
    from storage.models import TaskDraft

    db.session.expire_all()
    assert db.session.query(TaskDraft).count() == 0
    impl.goto(task_url)
    assert "已与部门核对十二项" in impl.locator("#submitted").inner_text()
