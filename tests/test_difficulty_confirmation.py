"""Issue 16 point 3 on the service-item, one-thing and e-licence lifecycles: the third party confirms the PM's
difficulty coefficient (in a branch beside the work) before the item's workload counts; the PM may adjust the
proposal only until then; the auditor confirms several at once on /difficulty. SQLite and PostgreSQL."""
from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import openpyxl
from sqlalchemy import select

from api.extensions import db
from storage.models import AuditEvent
from tests.conftest import World
from tests.test_web import Browser

WORK = [("impl", "survey_sorting", {"item_count": 2}), ("rev_a", "confirm_survey", {"decision": "approve"}),
        ("impl", "design", {}), ("rev_a", "confirm_design", {"decision": "approve"}),
        ("impl", "build_integration", {"integration_done": True}), ("impl", "tests", {"tests_passed": True}),
        ("impl", "go_live", {"go_live_date": "2025-06-30"}), ("rev_a", "cosign_department", {"confirm": True}),
        ("impl", "cosign_implementer", {"confirm": True})]


def proposed(w: World, code: str, difficulty: str = "1.2") -> int:
    """A Shanghai line-1 iteration (no walkthrough) up to the PM's proposal; the auditor has not confirmed."""
    w.auto_confirm_difficulty = False
    item_id = w.new_item(code, mode="iteration", channels=["pc"])["id"]
    w.complete_task_as("impl", item_id, "intake", {"summary": "优化迭代"})
    w.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": difficulty, "complexity_note": "两系统对接"})
    return item_id


def entries(w: World, item_id: int) -> list[dict[str, Any]]:
    return [e for e in w.get("pm", "/api/v1/workload").get_json()["entries"] if e["item_id"] == item_id]


def test_line1_work_done_counts_nothing_until_the_auditor_confirms(world: World):
    w = world
    item_id = proposed(w, "SH-DF-1")
    names = sorted(t["name"] for t in w.open_tasks(item_id))
    assert names == ["review_difficulty", "survey_sorting"]  # the confirmation runs beside the work
    review = w.task_named(item_id, "review_difficulty")
    assert review["lane"] == "auditor" and review["due_at"] is not None
    for user, name, data in WORK:
        w.complete_task_as(user, item_id, name, data)
    item = w.get("pm", f"/api/v1/items/{item_id}").get_json()
    # The work is done, the item is not: it waits for the third party, and nothing is billable yet.
    assert item["status"] == "active" and item["stage"] == "confirmation"
    assert [t["name"] for t in w.open_tasks(item_id)] == ["review_difficulty"]
    assert entries(w, item_id) == []
    r = w.complete("auditor", review["id"], {"verdict": "confirm"})
    assert r.status_code == 200, r.get_json()
    item = w.get("pm", f"/api/v1/items/{item_id}").get_json()
    assert item["status"] == "completed" and item["difficulty_confirmed_by"] == "auditor"
    assert [(e["difficulty"], e["amount"], e["difficulty_proposed_by"], e["difficulty_confirmed_by"])
            for e in entries(w, item_id)] == [(1.2, 54000.0, "pm", "auditor")]


def test_auditor_sets_another_level_with_a_reason_and_exports_show_who(world: World):
    w = world
    item_id = proposed(w, "SH-DF-2")
    review = w.task_named(item_id, "review_difficulty")
    no_reason = w.complete("auditor", review["id"], {"verdict": "set", "difficulty": "1.5"})
    assert no_reason.status_code == 422 and "reason" in no_reason.get_json()["errors"]
    off_level = w.complete("auditor", review["id"], {"verdict": "set", "difficulty": "1.3", "reason": "跨部门"})
    assert off_level.status_code == 422 and "difficulty" in off_level.get_json()["errors"]
    r = w.complete("auditor", review["id"], {"verdict": "set", "difficulty": "1.5", "reason": "涉及跨部门数据协同"})
    assert r.status_code == 200, r.get_json()
    assert entries(w, item_id) == []  # confirmed early: the work still has to finish
    for user, name, data in WORK:
        w.complete_task_as(user, item_id, name, data)
    got = entries(w, item_id)
    assert [(e["channel"], e["difficulty"], e["amount"], e["difficulty_proposed_by"], e["difficulty_confirmed_by"])
            for e in got] == [("pc", 1.5, 67500.0, "pm", "auditor")]
    confirmed = db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == "item.difficulty_confirmed",
                                                            AuditEvent.target_id == str(item_id))).all()
    assert [(e.detail["proposed"], e.detail["confirmed"], e.detail["reason"]) for e in confirmed] == [
        ("1.20", "1.50", "涉及跨部门数据协同")]
    # The workload detail sheet (XLSX) names who proposed and who confirmed.
    r = w.get("pm", "/api/v1/exports/workload.xlsx")
    assert r.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(r.data))
    rows = [list(row) for sheet in book.worksheets for row in sheet.iter_rows(values_only=True)]
    header = next(row for row in rows if "难度系数提出人" in row)
    row = next(row for row in rows if "SH-DF-2" in row)
    assert row[header.index("难度系数提出人")] == "pm" and row[header.index("难度系数确认人")] == "auditor"
    assert Decimal(str(row[header.index("难度系数")])) == Decimal("1.5")


def test_pm_adjusts_until_the_auditor_confirms_then_409(world: World):
    w = world
    item_id = proposed(w, "SH-DF-3")
    review = w.task_named(item_id, "review_difficulty")
    r = w.post("pm", f"/api/v1/items/{item_id}/difficulty", json={"difficulty": "1.3", "note": "接口更多"})
    assert r.status_code == 422  # not a level the contract allows on line 1
    r = w.post("pm", f"/api/v1/items/{item_id}/difficulty", json={"difficulty": "1.5", "note": "接口更多"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["difficulty"] == 1.5
    # The pending confirmation shows the adjusted proposal, and the adjustment is audited with it.
    page = Browser(w.app, "auditor").get(f"/tasks/{review['id']}").get_data(as_text=True)
    assert "1.50" in page
    adjusted = db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == "item.difficulty_proposed",
                                                           AuditEvent.target_id == str(item_id))
                                  .order_by(AuditEvent.id)).all()  # the PM's proposal first, the adjustment last
    assert adjusted[-1].detail["after"] == "1.50" and adjusted[-1].detail["review_tasks"] == [review["id"]]
    assert w.complete("auditor", review["id"], {"verdict": "confirm"}).status_code == 200
    r = w.post("pm", f"/api/v1/items/{item_id}/difficulty", json={"difficulty": "1.0", "note": "太晚了"})
    assert r.status_code == 409 and r.get_json()["code"] == "difficulty_confirmed"
    assert "难度系数已确认" in r.get_json()["detail"]
    assert w.get("pm", f"/api/v1/items/{item_id}").get_json()["difficulty"] == 1.5
    # The web says it in Chinese and no longer offers the form.
    pm = Browser(w.app, "pm")
    r = pm.post(f"/items/{item_id}/difficulty", {"difficulty": "1.0", "note": "太晚了"})
    page = pm.get(r.headers["Location"]).get_data(as_text=True)
    assert "第三方已确认难度系数" in page and 'id="difficulty-form"' not in page


def test_auditor_confirms_three_at_once_on_the_web(world: World):
    w = world
    ids = [proposed(w, f"SH-DF-B{i}") for i in range(3)]
    tasks = [w.task_named(i, "review_difficulty")["id"] for i in ids]
    auditor = Browser(w.app, "auditor")
    inbox = auditor.get("/inbox").get_data(as_text=True)
    assert 'id="difficulty-waiting"' in inbox and 'href="/difficulty"' in inbox
    page = auditor.get("/difficulty").get_data(as_text=True)
    assert all(f'data-task-id="{t}"' in page for t in tasks)
    assert "确认所选" in page and "复杂度说明" in page and "SH-YWTB-2025" in page
    assert Browser(w.app, "pm").get("/difficulty").status_code == 403
    # Filtered by item code, only the matching one is listed.
    narrowed = auditor.get("/difficulty?q=SH-DF-B1").get_data(as_text=True)
    assert f'data-task-id="{tasks[1]}"' in narrowed and f'data-task-id="{tasks[0]}"' not in narrowed
    # One of them is confirmed meanwhile on its own page: that one fails, the other three succeed.
    late = proposed(w, "SH-DF-B3")
    late_task = w.task_named(late, "review_difficulty")["id"]
    assert w.complete("auditor", late_task, {"verdict": "confirm"}).status_code == 200
    r = auditor.post("/difficulty", {"task_id": [*map(str, tasks), str(late_task)]})
    assert r.status_code == 200
    body = r.get_data(as_text=True)
    assert body.count('data-ok="yes"') == 3 and body.count('data-ok="no"') == 1
    assert f'data-task="{late_task}" data-ok="no"' in body and "此任务已结束" in body
    for item_id in ids:
        item = w.get("pm", f"/api/v1/items/{item_id}").get_json()
        assert item["difficulty_confirmed_by"] == "auditor" and item["difficulty"] == 1.2
        assert "review_difficulty" not in [t["name"] for t in w.open_tasks(item_id)]
    # Each confirmation is an ordinary task completion, audited as one.
    done = db.session.scalars(select(AuditEvent).where(AuditEvent.event_type == "task.completed",
                                                       AuditEvent.target_id.in_([str(t) for t in tasks]))).all()
    assert sorted(int(e.target_id) for e in done) == sorted(tasks)
    assert "没有待确认的难度系数" in auditor.get("/difficulty").get_data(as_text=True)


def test_a_line_without_declared_levels_keeps_the_pms_value_alone(world: World):
    """Kaiping declares no difficulty levels: no third-party step, the PM's proposal settles it (today's rule)."""
    from bpmn import CATALOG_DIR
    from engine.usecases.admin import load_catalog_file
    from engine.usecases.tasks import needs_difficulty_review
    from storage.models import ServiceLine

    load_catalog_file(db.session, CATALOG_DIR / "kaiping.toml")
    db.session.commit()
    lines = {sl.code: sl for sl in db.session.scalars(select(ServiceLine))}
    assert not needs_difficulty_review(lines["config"]) and lines["config"].process_id == "service_item"
    shanghai = [sl for sl in lines.values() if sl.process_id in ("service_item", "one_thing", "e_licence")
                and sl.difficulty_levels]
    assert {sl.code for sl in shanghai} >= {"1", "2", "3", "5", "6", "12"}
    assert all(needs_difficulty_review(sl) for sl in shanghai)


def test_rework_redoes_the_confirmation_through_the_proposal_never_the_auditors_step(world: World):
    w = world
    item_id = proposed(w, "SH-DF-RW")
    review = w.task_named(item_id, "review_difficulty")
    assert w.complete("auditor", review["id"], {"verdict": "confirm"}).status_code == 200
    # The auditor's step is not a rework target: the PM cannot send the item back to it ...
    r = w.post("pm", f"/api/v1/items/{item_id}/rework", json={"to": "review_difficulty", "reason": "重新确认"})
    assert r.status_code == 422, r.get_json()
    assert "review_difficulty" not in r.get_json()["errors"]["to"][0]
    assert w.get("pm", f"/api/v1/items/{item_id}").get_json()["difficulty_confirmed_by"] == "auditor"
    # ... and the item page does not offer it; sending it back to the proposal starts a fresh confirmation.
    page = Browser(w.app, "pm").get(f"/items/{item_id}").get_data(as_text=True)
    assert 'value="confirm_difficulty"' in page and 'value="review_difficulty"' not in page
    r = w.post("pm", f"/api/v1/items/{item_id}/rework", json={"to": "confirm_difficulty", "reason": "复杂度重估"})
    assert r.status_code == 200, r.get_json()
    assert [t["name"] for t in w.open_tasks(item_id)] == ["confirm_difficulty"]
    w.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.5", "complexity_note": "三系统对接"})
    assert sorted(t["name"] for t in w.open_tasks(item_id)) == ["review_difficulty", "survey_sorting"]
