"""登记事项 for a metered line in headless Chromium: picking the line swaps channels, mode and difficulty for 计量数量
and 计量期间 (a month picker), a bad period comes back inline, a good record opens its item page with its units and
period; the form fits 1366×768 and 390×844. Screenshots go outside the repository (ITEMGATE_SHOTS, default
/tmp/shots-18-metered). SQLite only: the browser exercises the web layer."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_inbox_flow import TIMEOUT_MS, sign_in
from tests.browser.test_phone import DESKTOP, OVERFLOW_JS, PHONE
from tests.browser.test_pm_flows import choose_line

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


@pytest.fixture
def shots() -> Path:
    path = Path(os.environ.get("ITEMGATE_SHOTS", "/tmp/shots-18-metered"))  # noqa: S108 - screenshots, not secrets
    path.mkdir(parents=True, exist_ok=True)
    return path


def _page(chromium: Any, live_url: str, viewport: dict[str, int]) -> Any:
    context = chromium.new_context(viewport=viewport, locale="zh-CN", base_url=live_url)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def _shown(page: Any, selector: str) -> bool:
    return bool(page.locator(selector).is_visible())


def test_pm_registers_a_metered_record(chromium: Any, live_url: str, world: Any, shots: Path) -> None:
    pm = _page(chromium, live_url, DESKTOP)
    sign_in(pm, "pm")
    pm.goto("/items/new")
    # A countable line: channels, mode and difficulty; no units or period.
    choose_line(pm, "1")
    assert _shown(pm, "#r-channels") and _shown(pm, "#r-mode") and _shown(pm, "#r-difficulty")
    assert not _shown(pm, "#r-units") and not _shown(pm, "#r-period")
    # A metered line (API calls): the fields switch.
    choose_line(pm, "9")
    assert _shown(pm, "#r-units") and _shown(pm, "#r-period")
    assert not _shown(pm, "#r-channels") and not _shown(pm, "#r-mode") and not _shown(pm, "#r-difficulty")
    assert pm.locator("#r-period").get_attribute("type") == "month"
    assert pm.evaluate(OVERFLOW_JS) == []
    pm.screenshot(path=str(shots / "pm-register-metered-1366.png"), full_page=True)
    # Back to a countable line and again to a metered one: the switch goes both ways.
    choose_line(pm, "5")
    assert _shown(pm, "#r-mode") and not _shown(pm, "#r-units")
    choose_line(pm, "29")
    assert _shown(pm, "#r-units") and not _shown(pm, "#r-mode")
    choose_line(pm, "9")
    pm.get_by_label("需求部门").select_option("DA")
    pm.get_by_label("事项名称").fill("统一身份认证 2025年11月调用量")
    pm.get_by_label("事项编码").fill("SH-IAM-PW-2025-11")
    pm.get_by_label("计量数量").fill("1440000000")
    # A month before 2000 is no period the use case takes: said next to the field, and the page (served after
    # the submit) still shows the record's fields, not the countable ones.
    pm.locator("#r-period").fill("1999-12")
    pm.get_by_role("button", name="登记并启动流程").click()
    pm.wait_for_load_state()
    assert pm.locator("#err-period").inner_text() == "计量期间应为年月，如 2026-11。"
    assert _shown(pm, "#r-units") and not _shown(pm, "#r-channels")
    assert pm.locator("#r-units").input_value() == "1440000000"
    pm.screenshot(path=str(shots / "pm-register-metered-error.png"), full_page=True)
    pm.locator("#r-period").fill("2025-11")
    pm.get_by_role("button", name="登记并启动流程").click()
    pm.wait_for_url(re.compile(r"/items/\d+$"))
    assert pm.locator("#item-units").inner_text().startswith("1,440,000,000")
    assert pm.locator("#item-period").inner_text() == "2025-11"
    pm.screenshot(path=str(shots / "pm-item-metered.png"), full_page=True)
    pm.context.close()


def test_register_form_fits_a_phone(chromium: Any, live_url: str, world: Any, shots: Path) -> None:
    phone = _page(chromium, live_url, PHONE)
    sign_in(phone, "pm")
    phone.goto("/items/new")
    for line in ("1", "9"):
        choose_line(phone, line)
        assert phone.evaluate(OVERFLOW_JS) == [], line
        phone.screenshot(path=str(shots / f"pm-register-{line}-390.png"), full_page=True)
    phone.context.close()
