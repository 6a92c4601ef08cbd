"""PM cancels an item or sends it back to an earlier step: no stray tasks, audit events, ledger rules kept."""
from __future__ import annotations

from typing import Any

from tests.test_kinds_api import APPROVE, GO_LIVE, do, intake, item, open_named


def at_confirm_design(world: Any, code: str) -> int:
    item_id = world.new_item(code, mode="iteration")["id"]
    intake(world, item_id)
    do(world, "impl", item_id, "survey_sorting", {"item_count": 2})
    do(world, "rev_a", item_id, "confirm_survey", APPROVE)
    do(world, "impl", item_id, "design", {})
    return item_id


def finish_from_confirm_design(world: Any, item_id: int) -> None:
    do(world, "rev_a", item_id, "confirm_design", APPROVE)
    do(world, "impl", item_id, "build_integration", {"integration_done": True})
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    do(world, "impl", item_id, "go_live", GO_LIVE)
    do(world, "rev_a", item_id, "cosign_department", {"confirm": True})
    do(world, "impl", item_id, "cosign_implementer", {"confirm": True})


def test_cancel_closes_open_tasks_and_is_never_billable(world, app):
    item_id = at_confirm_design(world, "SH-CX-1")
    review = open_named(world, item_id, "confirm_design")[0]
    assert world.post("impl", f"/api/v1/items/{item_id}/cancel", json={"reason": "需求撤销"}).status_code == 403
    assert world.post("pm", f"/api/v1/items/{item_id}/cancel", json={}).status_code == 422
    r = world.post("pm", f"/api/v1/items/{item_id}/cancel", json={"reason": "部门撤回需求"})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "cancelled"
    assert [t for t in body["tasks"] if t["status"] == "ready"] == []
    assert next(t for t in body["tasks"] if t["id"] == review["id"])["status"] == "cancelled"
    assert "item.cancelled" in [h["event"] for h in body["history"]]
    # Nothing can move any more, and there is nothing in the inbox.
    assert world.complete("rev_a", review["id"], APPROVE).status_code == 409
    assert world.upload("impl", item_id, "functional_design").status_code == 409
    assert world.post("pm", f"/api/v1/items/{item_id}/cancel", json={"reason": "again"}).status_code == 409
    assert world.post("pm", f"/api/v1/items/{item_id}/rework",
                      json={"to": "design", "reason": "again"}).status_code == 409
    inbox = world.get("rev_a", "/api/v1/tasks?scope=group").get_json()["tasks"]
    assert [t for t in inbox if t["item_id"] == item_id] == []
    assert world.get("pm", "/api/v1/workload").get_json()["entries"] == []
    # Its deadline timer is gone with it.
    from tests.test_deadlines import tick

    assert tick(app) == 0
    notes = world.get("pm", "/api/v1/notifications?per_page=100").get_json()["notifications"]
    assert [n for n in notes if n["kind"] in ("reminder", "escalation")] == []


def test_a_completed_item_cannot_be_cancelled(world):
    item_id = at_confirm_design(world, "SH-CX-2")
    finish_from_confirm_design(world, item_id)
    r = world.post("pm", f"/api/v1/items/{item_id}/cancel", json={"reason": "太晚了"})
    assert r.status_code == 409 and r.get_json()["code"] == "item_not_active"
    assert len(world.get("pm", "/api/v1/workload").get_json()["entries"]) == 2


def test_rework_sends_the_item_back_and_it_completes_once(world):
    item_id = at_confirm_design(world, "SH-RW-1")
    before = {t["id"] for t in item(world, item_id)["tasks"]}
    r = world.post("pm", f"/api/v1/items/{item_id}/rework", json={"to": "go_live", "reason": "x不存在"})
    assert r.status_code == 422 and "to" in r.get_json()["errors"]
    assert world.post("impl", f"/api/v1/items/{item_id}/rework",
                      json={"to": "survey_sorting", "reason": "调研不全"}).status_code == 403
    r = world.post("pm", f"/api/v1/items/{item_id}/rework", json={"to": "survey_sorting", "reason": "调研清单缺少两项"})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    ready = [t for t in body["tasks"] if t["status"] == "ready"]
    assert [(t["name"], t["return_comment"]) for t in ready] == [("survey_sorting", "调研清单缺少两项")]
    assert ready[0]["id"] not in before  # task ids are never reused
    assert body["stage"] == "survey"
    assert next(t for t in body["tasks"] if t["name"] == "confirm_design")["status"] == "cancelled"
    events = [h["event"] for h in body["history"]]
    assert "item.reworked" in events and "task.reopened" in events
    # The item runs again from there and is tallied once.
    do(world, "impl", item_id, "survey_sorting", {"item_count": 4})
    do(world, "rev_a", item_id, "confirm_survey", APPROVE)
    do(world, "impl", item_id, "design", {})
    finish_from_confirm_design(world, item_id)
    assert item(world, item_id)["status"] == "completed"
    entries = world.get("pm", "/api/v1/workload").get_json()["entries"]
    assert sorted(e["channel"] for e in entries) == ["mobile", "pc"]


def test_rework_of_a_one_thing_redoes_the_per_department_analyses(world):
    created = world.new_item("SH-RW-2", line="5", department="DA", attributes={"departments": ["DA", "DB"]})
    item_id = created["id"]
    intake(world, item_id)
    do(world, "impl", item_id, "survey_current", {})
    for dept in ("DA", "DB"):
        do(world, "impl", item_id, "analyse_linked_item", {}, department=dept)
    do(world, "rev_a", item_id, "confirm_linked_item", APPROVE, department="DA")
    do(world, "rev_b", item_id, "confirm_linked_item", APPROVE, department="DB")
    do(world, "impl", item_id, "business_technical_plan", {})
    r = world.post("pm", f"/api/v1/items/{item_id}/rework", json={"to": "survey_current", "reason": "现状调研需重做"})
    assert r.status_code == 200, r.get_json()
    assert [t["name"] for t in world.open_tasks(item_id)] == ["survey_current"]
    do(world, "impl", item_id, "survey_current", {})
    assert sorted(t["department"] for t in open_named(world, item_id, "analyse_linked_item")) == ["DA", "DB"]


def test_rework_inside_the_e_licence_issuing_subprocess(world):
    item_id = world.new_item("SH-RW-ZZ", line="12", channels=[])["id"]
    intake(world, item_id, {"parts": ["using"]})
    do(world, "impl", item_id, "collect_info", {})
    do(world, "rev_a", item_id, "confirm_info", APPROVE)
    do(world, "impl", item_id, "customise_template", {})
    do(world, "impl", item_id, "configure_parameters", {})
    do(world, "rev_a", item_id, "template_check", APPROVE)
    r = world.post("pm", f"/api/v1/items/{item_id}/rework", json={"to": "customise_template", "reason": "底版字段变更"})
    assert r.status_code == 200, r.get_json()
    assert [t["name"] for t in world.open_tasks(item_id)] == ["customise_template"]
    do(world, "impl", item_id, "customise_template", {})
    do(world, "impl", item_id, "configure_parameters", {})
    do(world, "rev_a", item_id, "template_check", APPROVE)
    do(world, "impl", item_id, "issuing_test", {"tests_passed": True})
    do(world, "impl", item_id, "issuing_publish", GO_LIVE)
    assert [t["name"] for t in world.open_tasks(item_id)] == ["using_design"]
    for name, data in (("using_design", {}), ("using_test", {"tests_passed": True}), ("using_go_live", GO_LIVE),
                       ("security_test", {"tests_passed": True})):
        do(world, "impl", item_id, name, data)
    do(world, "rev_a", item_id, "cosign_department", {"confirm": True})
    do(world, "impl", item_id, "cosign_implementer", {"confirm": True})
    assert item(world, item_id)["status"] == "completed"
