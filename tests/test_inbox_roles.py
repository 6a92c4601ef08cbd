"""Work that waits for a role is in that role's inbox: settlement steps (which are not item tasks) for the auditor,
the buyer and the PM with due dates, and the PM's inbox opens on the tab where the PM's work is."""
from __future__ import annotations

from tests.settlement_helpers import adhoc_contract, completed_items
from tests.test_settlement import CURRENT
from tests.test_web import Browser


def test_settlement_steps_reach_the_role_that_must_act(world, app):
    world.user("buyer2", "buyer")
    completed_items(2, prefix="INB")
    adhoc_contract()  # an ad-hoc period of today's dates (stage claims: test_contract_settlement.py)
    r = world.post("pm", "/api/v1/settlements", json=CURRENT)
    assert r.status_code == 201, r.get_json()
    sid = r.get_json()["id"]
    pm = Browser(app, "pm")
    page = pm.get("/inbox").get_data(as_text=True)
    assert 'id="settlement-steps"' in page and "编制并提交结算申报" in page
    # Nothing waits for the auditor yet.
    auditor = Browser(app, "auditor")
    assert 'id="settlement-steps"' not in auditor.get("/inbox").get_data(as_text=True)
    assert world.post("pm", f"/api/v1/settlements/{sid}/submit", json={}).status_code == 200
    page = auditor.get("/inbox").get_data(as_text=True)
    assert f'data-settlement="{sid}"' in page and "第三方审核申报材料" in page
    assert f"/settlements/{sid}" in page
    steps = world.get("auditor", "/api/v1/tasks?scope=all").get_json()["settlement_steps"]
    assert [(s["settlement_id"], s["step"]) for s in steps] == [(sid, "audit_review")]
    # Returned: the PM revises, due in 15 working days.
    assert world.post("auditor", f"/api/v1/settlements/{sid}/return", json={"comment": "佐证不全"}).status_code == 200
    steps = world.get("pm", "/api/v1/tasks?scope=group").get_json()["settlement_steps"]
    assert steps[0]["title"] == "修改结算申报" and steps[0]["due_at"]
    assert 'id="settlement-steps"' not in auditor.get("/inbox").get_data(as_text=True)
    assert world.post("pm", f"/api/v1/settlements/{sid}/submit", json={}).status_code == 200
    assert world.post("auditor", f"/api/v1/settlements/{sid}/accept", json={}).status_code == 200
    buyer = Browser(app, "buyer")
    assert "采购单位初审" in buyer.get("/inbox").get_data(as_text=True)
    r = world.post("buyer", f"/api/v1/settlements/{sid}/first-review", json={"decision": "approve",
                                                                             "assessment_score": 95})
    assert r.status_code == 200, r.get_json()
    # The buyer who did the first review does not see the final approval as theirs; another buyer does.
    assert "采购单位审定" not in Browser(app, "buyer").get("/inbox").get_data(as_text=True)
    assert "采购单位审定" in Browser(app, "buyer2").get("/inbox").get_data(as_text=True)


def test_pm_inbox_opens_where_the_work_is(world, app):
    for code in ("OPEN-1", "OPEN-2"):
        world.new_item(code)
    pm = Browser(app, "pm")
    page = pm.get("/inbox").get_data(as_text=True)
    # No PM task is claimed or queued (the intakes wait for implementers): the page opens on 全部任务.
    assert '<a href="/inbox?scope=all" aria-current="page">' in page
    assert "OPEN-1" in page and "OPEN-2" in page
    impl = Browser(app, "impl")
    assert '<a href="/inbox?scope=group" aria-current="page">' in impl.get("/inbox").get_data(as_text=True)
