"""One screenshot per role of the page that role works from, on the demo data (README links them; `make
screenshots` writes them to tests/screenshots/roles/, which git ignores). Each page must render in Chinese with
the bell, and without an error."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import VIEWPORT
from tests.browser.test_inbox_flow import TIMEOUT_MS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

# role → (demo user, the page that role works from, a text the page must show)
ROLE_PAGES = {
    "implementer": ("impl", "/inbox?scope=group", "收件箱"),
    "dept_reviewer": ("rev_ga", "/inbox", "收件箱"),
    "pm": ("pm", "/dashboard", "看板"),
    "auditor": ("auditor", "/settlements", "结算"),
    "buyer": ("buyer", "/items", "事项"),
    "admin": ("admin", "/admin", "系统状态"),
}


@pytest.fixture
def demo(app: Any) -> Any:
    """The demo data, plus a settlement claim the PM has submitted: it waits for the auditor."""
    from datetime import datetime

    from api.demo import DEMO_PASSWORD, load_demo
    from engine.contract.calendar import TZ

    load_demo(app, app.extensions["itemgate_store"], echo=lambda _line: None)
    from tests.settlement_helpers import adhoc_contract

    adhoc_contract()  # a claim for an ad-hoc period (the demo's items were completed today)
    client = app.test_client()
    token = client.post("/api/v1/auth/token", json={"username": "pm", "password": DEMO_PASSWORD}).get_json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/settlements", headers=auth, json={
        "contract": "SH-YWTB-2025", "period_start": "2025-01-01", "period_end": datetime.now(TZ).date().isoformat(),
        "label": "2026 年第一阶段结算"})
    assert r.status_code == 201, r.get_json()
    assert client.post(f"/api/v1/settlements/{r.get_json()['id']}/submit", headers=auth, json={}).status_code == 200
    return app


def test_each_role_s_page(chromium: Any, live_url: str, demo: Any, screenshot_dir: Path) -> None:
    from api.demo import DEMO_PASSWORD

    out = screenshot_dir / "roles"
    out.mkdir(parents=True, exist_ok=True)
    for role, (username, path, heading) in ROLE_PAGES.items():
        context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN", base_url=live_url)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("用户名").fill(username)
        page.get_by_label("密码").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(re.compile(r"/inbox"))
        response = page.goto(path)
        assert response is not None and response.status == 200, (role, path)
        assert heading in page.locator("main").inner_text(), role
        assert page.locator("#bell").count() == 1, role
        page.screenshot(path=str(out / f"{role}.png"))
        context.close()
