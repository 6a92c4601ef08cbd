"""The admin's process page in headless Chromium: check a broken model (problems in Chinese, nothing deployed),
deploy a fixed one, see running items per version, dry-run and migrate a stranded item."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_inbox_flow import open_page, sign_in
from tests.model_edits import SERVICE_ITEM, with_timer
from tests.test_migration import BAD_TIMER, FIXED, _stuck
from tests.test_model_safety import deploy

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def choose(page: Any, name: str, xml: str) -> None:
    page.set_input_files("#bpmn-file", files=[{"name": name, "mimeType": "application/xml",
                                                "buffer": xml.encode("utf-8")}])


def test_admin_checks_deploys_and_migrates(chromium: Any, live_url: str, world: Any, screenshot_dir: Path) -> None:
    bad = deploy(world, BAD_TIMER).get_json()["id"]
    item_id, _task = _stuck(world, "SH-WEB-M-1")
    page = open_page(chromium, live_url)
    sign_in(page, "admin")
    page.goto("/admin/processes")
    assert page.locator(f'#versions tr[data-definition="{bad}"] .running').inner_text() == "1"

    # A bare-name timer: the check lists the element and says in Chinese what to change; nothing is deployed.
    choose(page, "broken.bpmn", with_timer(SERVICE_ITEM, "timeDuration", "P3D"))
    with page.expect_navigation():
        page.locator("#check-button").click()
    problems = page.locator("#problems")
    assert "confirm_survey_overdue" in problems.inner_text()
    assert "未定义的变量名" in problems.inner_text() and "加引号" in problems.inner_text()
    assert page.locator("#versions tbody tr").count() == 1
    page.screenshot(path=str(screenshot_dir / "admin-processes-problems.png"))

    # The fixed model passes the check, then deploys.
    choose(page, "fixed.bpmn", FIXED)
    with page.expect_navigation():
        page.locator("#check-button").click()
    assert page.locator("#check-ok").is_visible()
    choose(page, "fixed.bpmn", FIXED)
    with page.expect_navigation():
        page.locator("#deploy-button").click()
    assert "已部署为新版本" in page.locator(".flashes").inner_text()
    fixed = world.get("admin", "/api/v1/admin/processes").get_json()["processes"][-1]["id"]
    row = page.locator(f'#versions tr[data-definition="{fixed}"]')
    assert row.locator(".running").inner_text() == "0"

    # Dry run, then the migration: the item moves to the fixed version and can go on.
    with page.expect_navigation():
        row.locator("button.dry-run").click()
    report = page.locator("#migration-report")
    assert "试运行结果" in report.inner_text() and "survey_sorting" in report.inner_text()
    assert page.locator(f'#versions tr[data-definition="{bad}"] .running').inner_text() == "1"
    with page.expect_navigation():
        page.locator(f'#versions tr[data-definition="{fixed}"] button.migrate').click()
    assert "迁移结果" in page.locator("#migration-report").inner_text()
    assert page.locator(f'#versions tr[data-definition="{fixed}"] .running').inner_text() == "1"
    page.screenshot(path=str(screenshot_dir / "admin-processes-migrated.png"))
    page.context.close()
    world.complete_task_as("impl", item_id, "survey_sorting", {})
