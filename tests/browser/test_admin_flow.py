"""The admin console and notifications in headless Chromium: an admin creating and deactivating a user, a catalogue
upload with an error and then a good one, a calendar year, and a notification arriving by the bell, by a local
webhook receiver and by a local SMTP sink. SQLite only: the browser exercises the web layer."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bpmn import CATALOG_DIR
from tests.browser.test_inbox_flow import open_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

SHANGHAI = (CATALOG_DIR / "shanghai.toml").read_text(encoding="utf-8")


def fresh() -> None:
    """End this thread's session (and its SQLite read snapshot) to see what the live server wrote."""
    from api.extensions import db

    db.session.remove()


def test_admin_creates_and_deactivates_a_user(chromium: Any, live_url: str, world: Any,
                                              screenshot_dir: Path) -> None:
    item = world.new_item("SH-ADMIN-1")
    intake = world.open_tasks(item["id"])[0]
    assert world.post("impl", f"/api/v1/tasks/{intake['id']}/claim").status_code == 200

    admin = open_page(chromium, live_url)
    admin.on("dialog", lambda dialog: dialog.accept())
    sign_in(admin, "admin")
    admin.get_by_role("link", name="系统管理").click()
    admin.wait_for_url(re.compile(r"/admin$"))
    assert admin.locator("#status-ready .ok").count() >= 1
    admin.screenshot(path=str(screenshot_dir / "admin-status.png"))

    admin.locator(".adminnav").get_by_role("link", name="用户").click()
    form = admin.locator("#new-user")
    form.get_by_label("用户名").fill("wang_rev")
    form.get_by_label("姓名").fill("王审核")
    form.get_by_label("角色").select_option("dept_reviewer")
    form.get_by_label("部门").select_option("DA")
    form.get_by_label("初始密码").fill("a-long-password")
    form.get_by_role("button", name="创建").click()
    assert admin.locator(".flash-ok").inner_text() == "已创建用户 wang_rev"
    assert "王审核" in admin.locator('tr[data-user="wang_rev"]').inner_text()

    row = admin.locator('tr[data-user="impl"]')
    row.get_by_role("button", name="停用").click()
    flash = admin.locator(".flash-ok").inner_text()
    assert flash.startswith("已停用 impl") and "1 个已认领任务已退回队列" in flash
    assert admin.locator('tr[data-user="impl"] .bad').inner_text() == "已停用"
    admin.screenshot(path=str(screenshot_dir / "admin-users.png"))
    fresh()
    assert world.get("pm", f"/api/v1/tasks/{intake['id']}").get_json()["assignee"] is None

    # The new reviewer signs in with the password the admin gave.
    from tests.conftest import PASSWORD

    reviewer = open_page(chromium, live_url)
    reviewer.goto("/login")
    reviewer.get_by_label("用户名").fill("wang_rev")
    reviewer.get_by_label("密码").fill("a-long-password")
    reviewer.get_by_role("button", name="登录").click()
    reviewer.wait_for_url(re.compile(r"/inbox"))
    assert PASSWORD  # the others keep the fixture's password


def test_catalogue_upload_with_an_error_then_applied_after_the_diff(chromium: Any, live_url: str, world: Any,
                                                                    screenshot_dir: Path) -> None:
    admin = open_page(chromium, live_url)
    sign_in(admin, "admin")
    admin.goto("/admin/catalogs")
    broken = SHANGHAI.replace('process = "one_thing"', 'process = "no_such_process"', 1)
    admin.set_input_files("#c-file", files=[{"name": "shanghai.toml", "mimeType": "text/plain",
                                             "buffer": broken.encode()}])
    with admin.expect_navigation() as nav:
        admin.get_by_role("button", name="检查").click()
    assert nav.value.status == 422
    problems = admin.locator("#catalog-problems li")
    assert problems.count() == 1
    line = int(problems.first.get_attribute("data-line"))
    assert "no_such_process" in broken.splitlines()[line - 1]
    assert f"第 {line} 行" in problems.first.inner_text()
    assert admin.locator("#catalog-apply").count() == 0
    admin.screenshot(path=str(screenshot_dir / "admin-catalog-error.png"))

    changed = SHANGHAI.replace('unit_prices = { pc = 45000, mobile = 72000, kiosk = 45000 }',
                               'unit_prices = { pc = 46000, mobile = 72000, kiosk = 45000 }', 1)
    admin.set_input_files("#c-file", files=[{"name": "shanghai.toml", "mimeType": "text/plain",
                                             "buffer": changed.encode()}])
    admin.get_by_role("button", name="检查").click()
    row = admin.locator('#diff-lines tr[data-line-code="1"]')
    assert row.get_attribute("data-change") == "changed" and "46000.00" in row.inner_text()
    assert admin.locator('#diff-lines tr[data-change="changed"]').count() == 1
    admin.screenshot(path=str(screenshot_dir / "admin-catalog-diff.png"))
    admin.get_by_role("button", name="确认载入").click()
    assert admin.locator(".flash-ok").inner_text() == "已载入合同 SH-YWTB-2025 的服务目录"
    fresh()
    prices = world.get("pm", "/api/v1/catalog").get_json()["contracts"][0]["service_lines"][0]["unit_prices"]
    assert prices["pc"] == 46000


def test_a_calendar_year_the_package_lacks(chromium: Any, live_url: str, world: Any, screenshot_dir: Path) -> None:
    fresh()
    years = world.get("admin", "/api/v1/admin/calendar").get_json()["years"]
    year = next(y["year"] for y in years if y["source"] == "none")
    admin = open_page(chromium, live_url)
    sign_in(admin, "admin")
    admin.goto("/admin/calendar")
    assert admin.locator(f'#calendar-years tr[data-year="{year}"][data-source="none"]').count() == 1
    admin.goto(f"/admin/calendar?year={year}")
    assert str(year) in admin.locator("#calendar-warning").inner_text()
    admin.get_by_label(re.compile("法定节假日")).fill(f"{year}-01-01 元旦\n{year}-02-30 错误")
    with admin.expect_navigation() as nav:
        admin.get_by_role("button", name=f"保存 {year} 年日历").click()
    assert nav.value.status == 422
    assert "第 2 行" in admin.locator(".field-error").first.inner_text()
    admin.get_by_label(re.compile("法定节假日")).fill(f"{year}-01-01 元旦\n{year}-10-01 国庆节")
    admin.get_by_label(re.compile("调休上班日")).fill(next(
        f"{year}-{m:02d}-{d:02d} 调休" for m in (9,) for d in range(20, 30)
        if __import__("datetime").date(year, m, d).weekday() == 6))
    admin.get_by_role("button", name=f"保存 {year} 年日历").click()
    assert admin.locator(".flash-ok").inner_text() == f"已保存 {year} 年的工作日历"
    assert admin.locator("#calendar-warning").count() == 0
    assert admin.locator(f'#calendar-years tr[data-year="{year}"]').get_attribute("data-source") == "admin"
    admin.screenshot(path=str(screenshot_dir / "admin-calendar.png"))


def test_a_notification_by_bell_webhook_and_email(chromium: Any, live_url: str, world: Any, app: Any,
                                                  smtp_sink: Any, webhook: Any, screenshot_dir: Path) -> None:
    from tests.test_notifications import _deliver

    impl = open_page(chromium, live_url)
    sign_in(impl, "impl")
    assert impl.locator("#bell .bell-count").count() == 0
    impl.goto("/me/channels")
    impl.get_by_label("电子邮件").fill("impl@example.org")
    impl.get_by_label("聊天机器人 Webhook").fill(webhook.url("/impl-robot"))
    impl.get_by_role("button", name="保存").click()
    assert impl.locator(".flash-ok").inner_text() == "通知方式已保存"

    item = world.new_item("SH-BELL-1")
    intake = world.open_tasks(item["id"])[0]
    impl.goto("/inbox")
    assert impl.locator("#bell .bell-count").inner_text() == "1"
    impl.locator("#bell").click()
    impl.wait_for_url(re.compile(r"/notifications$"))
    entry = impl.locator("#notifications tr.is-unread", has_text="SH-BELL-1")
    assert entry.count() == 1
    impl.screenshot(path=str(screenshot_dir / "notifications.png"))
    entry.get_by_role("link").click()
    impl.wait_for_url(re.compile(rf"/tasks/{intake['id']}$"))
    assert impl.locator("#bell .bell-count").count() == 0
    # impl2 has the same group notification, still unread: read state is per person.
    fresh()
    assert world.get("impl2", "/api/v1/notifications?unread=1").get_json()["total"] == 1

    assert smtp_sink.messages == [] and webhook.posts == []
    assert _deliver(app, smtp_sink.port)["sent"] == 2
    assert smtp_sink.messages[0]["To"] == "impl@example.org" and "SH-BELL-1" in smtp_sink.bodies()[0]
    assert [path for path, _ in webhook.posts] == ["/impl-robot"]
