"""Irreversible actions in the browser: 审定并锁定 and 冲销此分录 show the figures and ask first; settlement lines are
ticked in a filterable list of claimable entries, and each claimed line leads to its item's evidence."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.contract.calendar import TZ
from tests.browser.conftest import VIEWPORT
from tests.browser.test_inbox_flow import TIMEOUT_MS, sign_in
from tests.settlement_helpers import adhoc_contract, completed_items, entry_ids

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def page_for(chromium: Any, base: str, username: str) -> Any:
    context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN", base_url=base)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, username)
    return page


def test_pick_lines_approve_with_confirmation_and_reverse(chromium: Any, live_url: str, world: Any) -> None:
    from api.extensions import db
    from storage.models import WorkloadEntry

    world.user("buyer2", "buyer")
    adhoc_contract()  # a claim for an ad-hoc period: entries before it are claimable without carrying
    completed_items(2, prefix="IN")
    early = datetime(2025, 6, 1, tzinfo=UTC)
    store = world.app.extensions["itemgate_store"]
    # Before the period: claimable, not gathered.
    outside = completed_items(2, prefix="OUT", at=early, store=store)
    spare = completed_items(1, prefix="SPARE", at=early)
    db.session.commit()
    today = datetime.now(TZ).date().isoformat()
    r = world.post("pm", "/api/v1/settlements", json={"contract": "SH-YWTB-2025", "period_start": "2026-01-01",
                                                      "period_end": today, "label": "确认测试"})
    assert r.status_code == 201, r.get_json()
    sid = r.get_json()["id"]

    pm = page_for(chromium, live_url, "pm")
    pm.goto(f"/settlements/{sid}")
    assert pm.locator("#lines tbody tr").count() == 2
    # The claimable list filters by item (also line, department, month) and is ticked, not typed.
    assert pm.locator("#claimable tbody tr").count() == 3
    pm.get_by_label("事项", exact=True).fill("OUT-0001")
    pm.get_by_role("button", name="筛选").click()
    assert pm.locator("#claimable tbody tr").count() == 1
    target = entry_ids([outside[1]])[0]
    pm.locator(f"#pick-{target}").check()
    pm.get_by_label("增加原因（必填）").fill("补报上期漏报")
    pm.get_by_role("button", name="增加所选分录").click()
    assert pm.locator(".flash-ok").inner_text() == "已修改申报明细"
    line = pm.locator(f'#lines tr[data-entry="{target}"]')
    assert "OUT-0001" in line.inner_text()
    # Each line leads to its item's evidence in one click.
    line.locator("a.evidence-link").click()
    pm.wait_for_url(re.compile(rf"/items/{outside[1]}#evidence$"))
    assert pm.locator("#evidence table.artefacts tbody tr").count() >= 1

    # Final approval: labelled for what it does, shows the figures, and wants the tick.
    for who, path, body in (("pm", "submit", {}), ("auditor", "accept", {"comment": "齐全"}),
                            ("buyer", "first-review", {"decision": "approve"})):
        r = world.post(who, f"/api/v1/settlements/{sid}/{path}", json=body)
        assert r.status_code == 200, r.get_json()
    approver = page_for(chromium, live_url, "buyer2")
    approver.goto(f"/settlements/{sid}")
    net = approver.locator("#net").inner_text()
    assert approver.locator("#confirm-net").inner_text() == net
    assert "不能再修改" in approver.locator("#final-confirm").inner_text()
    approver.get_by_label("审定通过并锁定").check()
    approver.get_by_role("button", name="审定并锁定").click()
    assert "勾选确认" in approver.locator(".flash-error").inner_text()
    assert world.get("pm", f"/api/v1/settlements/{sid}").get_json()["status"] == "final_approval"
    approver.get_by_label("审定通过并锁定").check()
    approver.get_by_label("我已核对以上金额，确认审定并锁定").check()
    approver.get_by_role("button", name="审定并锁定").click()
    approver.locator("#locked").wait_for()
    assert world.get("pm", f"/api/v1/settlements/{sid}").get_json()["status"] == "approved"

    # 冲销此分录: the reversing amount is shown, the reason and the tick are required.
    spare_entry = entry_ids(spare)[0]
    amount = db.session.get(WorkloadEntry, spare_entry).amount
    pm.goto("/ledger")
    row = pm.locator(f'#ledger tr[data-entry="{spare_entry}"]')
    row.get_by_text("冲销此分录…").click()
    box = row.locator(".confirm-box")
    assert f"-{amount:,.2f}" in box.inner_text()
    box.get_by_role("button", name="冲销此分录").click()  # the browser insists on reason and tick first
    assert db.session.query(WorkloadEntry).filter_by(reverses_id=spare_entry).count() == 0
    box.get_by_label("冲销原因（必填）").fill("重复计量")
    box.get_by_label("我已核对，确认冲销此分录").check()
    box.get_by_role("button", name="冲销此分录").click()
    assert pm.locator(".flash-ok").inner_text() == "已冲销该分录"
    db.session.expire_all()
    assert db.session.query(WorkloadEntry).filter_by(reverses_id=spare_entry).count() == 1
    pm.context.close()
    approver.context.close()
