"""Every kind of work over HTTP, on SQLite and PostgreSQL with real uploads: one-thing, e-licence,
scenario guide, and the line-3 service item."""
from __future__ import annotations

from typing import Any

import pytest

from bpmn import CATALOG_DIR

APPROVE = {"decision": "approve", "comment": "同意"}
RETURN = {"decision": "return", "comment": "请补充修改"}
GO_LIVE = {"go_live_date": "2026-11-20", "url": "https://zwdt.sh.gov.cn/item/1"}


def open_named(world: Any, item_id: int, name: str, department: str | None = None) -> list[dict[str, Any]]:
    return [t for t in world.open_tasks(item_id)
            if t["name"] == name and (department is None or t["department"] == department)]


def do(world: Any, user: str, item_id: int, name: str, data: dict[str, Any] | None = None,
       department: str | None = None) -> dict[str, Any]:
    """Upload what the task's gate still needs (as `user`), then complete it; asserts success."""
    tasks = open_named(world, item_id, name, department)
    open_now = [(t["name"], t["department"]) for t in world.open_tasks(item_id)]
    assert tasks, f"no open {name} ({department}); open: {open_now}"
    task = tasks[0]
    detail = world.get(user, f"/api/v1/tasks/{task['id']}").get_json()
    for req in detail["required_artefacts"]:
        if not req["present"]:
            r = world.upload(user, item_id, req["kind"], task_id=task["id"])
            assert r.status_code == 201, r.get_json()
    r = world.complete(user, task["id"], data)
    assert r.status_code == 200, (name, r.get_json())
    world.after_step(item_id, name)
    return r.get_json()


def item(world: Any, item_id: int) -> dict[str, Any]:
    r = world.get("pm", f"/api/v1/items/{item_id}")
    assert r.status_code == 200
    return r.get_json()


def intake(world: Any, item_id: int, data: dict[str, Any] | None = None) -> None:
    do(world, "impl", item_id, "intake", data or {"summary": "需求概述"})
    do(world, "pm", item_id, "confirm_difficulty", {"difficulty": "1.20", "complexity_note": "涉及多部门数据共享"})


@pytest.mark.usefixtures("cache_mode")
def test_one_thing_with_three_departments(world):
    world.user("rev_c", "dept_reviewer", "DC")
    created = world.new_item("SH-YJS-1", line="5", department="DA", channels=["pc", "mobile"],
                             attributes={"departments": ["DA", "DB", "DC"]})
    item_id = created["id"]
    intake(world, item_id)
    do(world, "impl", item_id, "survey_current", {"item_count": 3})

    # One analysis per participating department, each scoped to that department's reviewer.
    analyses = open_named(world, item_id, "analyse_linked_item")
    assert sorted(t["department"] for t in analyses) == ["DA", "DB", "DC"]
    for dept in ("DA", "DB", "DC"):
        do(world, "impl", item_id, "analyse_linked_item", {"notes": f"{dept} 关联事项"}, department=dept)
    confirms = {t["department"]: t for t in open_named(world, item_id, "confirm_linked_item")}
    assert sorted(confirms) == ["DA", "DB", "DC"]

    # A reviewer of another department cannot act on (nor even see) DA's confirmation.
    r = world.complete("rev_b", confirms["DA"]["id"], APPROVE)
    assert r.status_code in (403, 404), r.get_json()
    r = world.post("rev_b", f"/api/v1/tasks/{confirms['DA']['id']}/claim")
    assert r.status_code in (403, 404)
    # Each department's reviewer sees its own confirmation in the group inbox.
    group = world.get("rev_c", "/api/v1/tasks?scope=group").get_json()["tasks"]
    assert [t["id"] for t in group if t["item_id"] == item_id] == [confirms["DC"]["id"]]

    do(world, "rev_a", item_id, "confirm_linked_item", APPROVE, department="DA")
    do(world, "rev_b", item_id, "confirm_linked_item", RETURN, department="DB")
    do(world, "rev_c", item_id, "confirm_linked_item", APPROVE, department="DC")
    # DB's analysis comes back as new rework, with the comment; the plan waits for it.
    rework = open_named(world, item_id, "analyse_linked_item")
    assert [(t["department"], t["return_comment"]) for t in rework] == [("DB", "请补充修改")]
    assert rework[0]["id"] not in [t["id"] for t in analyses]
    assert not open_named(world, item_id, "business_technical_plan")
    do(world, "impl", item_id, "analyse_linked_item", {"notes": "补充"}, department="DB")
    do(world, "rev_b", item_id, "confirm_linked_item", APPROVE, department="DB")

    # Plans approved by the lead department (DA), then build through joint confirmation.
    do(world, "impl", item_id, "business_technical_plan", {"notes": "方案"})
    plan_review = open_named(world, item_id, "confirm_plan")[0]
    assert plan_review["department"] == "DA"
    assert world.complete("rev_b", plan_review["id"], APPROVE).status_code in (403, 404)
    do(world, "rev_a", item_id, "confirm_plan", APPROVE)
    do(world, "impl", item_id, "build_integration", {"integration_done": True})
    do(world, "impl", item_id, "quality_check", {"tests_passed": True})
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    do(world, "impl", item_id, "walkthrough", {})
    do(world, "impl", item_id, "go_live", GO_LIVE)
    do(world, "rev_a", item_id, "cosign_department", {"confirm": True})
    do(world, "impl2", item_id, "cosign_implementer", {"confirm": True})

    done = item(world, item_id)
    assert done["status"] == "completed"
    kinds = {a["kind"] for a in done["artefacts"]}
    assert {"current_state_survey", "item_analysis", "business_plan", "technical_plan",
            "data_quality_confirmation", "walkthrough_confirmation", "go_live_confirmation"} <= kinds
    entries = world.get("pm", "/api/v1/workload?contract=SH-YWTB-2025").get_json()["entries"]
    assert sorted((e["channel"], e["amount"]) for e in entries if e["item_id"] == item_id) == [
        ("mobile", 840000.0), ("pc", 600000.0)]


@pytest.mark.usefixtures("cache_mode")
def test_one_thing_with_two_departments_reaches_the_plan_after_both_confirmations(world, cache_mode):
    """The per-department step ends when both departments have confirmed, whichever process answers: cold, every
    request resumes the instance against a freshly parsed model (it froze there: all done, nothing open)."""
    item_id = world.new_item("SH-YJS-2", line="5", department="DA", channels=["pc"],
                             attributes={"departments": ["DA", "DB"]})["id"]
    intake(world, item_id)
    do(world, "impl", item_id, "survey_current", {"item_count": 2})
    for dept in ("DA", "DB"):
        do(world, "impl", item_id, "analyse_linked_item", {"notes": dept}, department=dept)
    do(world, "rev_a", item_id, "confirm_linked_item", RETURN, department="DA")
    do(world, "impl", item_id, "analyse_linked_item", {"notes": "补充"}, department="DA")
    do(world, "rev_b", item_id, "confirm_linked_item", APPROVE, department="DB")
    assert [(t["name"], t["department"]) for t in world.open_tasks(item_id)] == [("confirm_linked_item", "DA")]
    do(world, "rev_a", item_id, "confirm_linked_item", APPROVE, department="DA")
    state = item(world, item_id)
    assert (state["status"], state["stage"]) == ("active", "plan"), cache_mode
    assert [t["name"] for t in world.open_tasks(item_id)] == ["business_technical_plan"]

    do(world, "impl", item_id, "business_technical_plan", {"notes": "方案"})
    do(world, "rev_a", item_id, "confirm_plan", APPROVE)
    do(world, "impl", item_id, "build_integration", {"integration_done": True})
    do(world, "impl", item_id, "quality_check", {"tests_passed": True})
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    do(world, "impl", item_id, "walkthrough", {})
    do(world, "impl", item_id, "go_live", GO_LIVE)
    do(world, "rev_a", item_id, "cosign_department", {"confirm": True})
    do(world, "impl2", item_id, "cosign_implementer", {"confirm": True})
    assert item(world, item_id)["status"] == "completed"
    entries = world.get("pm", "/api/v1/workload?contract=SH-YWTB-2025").get_json()["entries"]
    assert [(e["channel"], e["amount"]) for e in entries if e["item_id"] == item_id] == [("pc", 600000.0)]


def run_licence(world: Any, code: str, parts: list[str]) -> dict[str, Any]:
    item_id = world.new_item(code, line="12", channels=[])["id"]
    intake(world, item_id, {"parts": parts, "summary": "营业执照"})
    do(world, "impl", item_id, "collect_info", {})
    do(world, "rev_a", item_id, "confirm_info", APPROVE)
    do(world, "impl", item_id, "customise_template", {})
    do(world, "impl", item_id, "configure_parameters", {})
    do(world, "rev_a", item_id, "template_check", RETURN)  # 模板校核 returned once
    do(world, "impl", item_id, "customise_template", {"notes": "底版调整"})
    do(world, "impl", item_id, "configure_parameters", {"notes": "参数调整"})
    do(world, "rev_a", item_id, "template_check", APPROVE)
    do(world, "impl", item_id, "issuing_test", {"tests_passed": True})
    do(world, "impl", item_id, "issuing_publish", GO_LIVE)
    names = sorted(t["name"] for t in world.open_tasks(item_id))
    expected = sorted([f"{p}_design" for p in parts]) or ["security_test"]
    assert names == expected
    for part in parts:
        do(world, "impl", item_id, f"{part}_design", {})
        do(world, "impl", item_id, f"{part}_test", {"tests_passed": True})
        do(world, "impl", item_id, f"{part}_go_live", GO_LIVE)
    do(world, "impl", item_id, "security_test", {"tests_passed": True})
    do(world, "rev_a", item_id, "cosign_department", {"confirm": True})
    do(world, "impl", item_id, "cosign_implementer", {"confirm": True})
    return item(world, item_id)


@pytest.mark.usefixtures("cache_mode")
def test_e_licence_with_issuing_showing_and_using(world):
    done = run_licence(world, "SH-ZZ-1", ["showing", "using"])
    assert done["status"] == "completed"
    kinds = {a["kind"] for a in done["artefacts"]}
    assert {"licence_parameters", "template_check_confirmation", "issuing_test_report", "showing_test_report",
            "using_test_report", "issuing_go_live_record", "showing_go_live_record", "using_go_live_record",
            "licence_records", "security_test_report", "go_live_confirmation"} <= kinds
    stages = [t["stage"] for t in done["tasks"]]
    assert "showing" in stages and "using" in stages


@pytest.mark.usefixtures("cache_mode")
def test_e_licence_with_issuing_only(world):
    done = run_licence(world, "SH-ZZ-2", [])
    assert done["status"] == "completed"
    kinds = {a["kind"] for a in done["artefacts"]}
    assert not kinds & {"showing_test_report", "using_test_report"}
    entries = world.get("pm", "/api/v1/workload").get_json()["entries"]
    assert [(e["channel"], e["amount"]) for e in entries if e["item_id"] == done["id"]] == [("all", 72000.0)]


@pytest.mark.usefixtures("cache_mode")
def test_scenario_guide_returned_twice(world, app):
    from api.extensions import db
    from engine.usecases.admin import load_catalog_file

    load_catalog_file(db.session, CATALOG_DIR / "kaiping.toml")
    db.session.commit()
    r = world.post("pm", "/api/v1/items", json={
        "contract": "KP-YTH-2026", "service_line": "guide", "name": "新生儿出生一件事导办", "code": "KP-G-1",
        "department": "DA", "channels": ["pc", "mobile"], "mode": "new"})
    assert r.status_code == 201, r.get_json()
    item_id = r.get_json()["id"]
    do(world, "impl", item_id, "guide_list", {"item_count": 12})
    do(world, "rev_a", item_id, "confirm_guide_list", APPROVE)
    for round_ in range(2):
        do(world, "impl", item_id, "guide_design", {"question_count": 6 + round_})
        do(world, "rev_a", item_id, "review_guide_design", {"decision": "return", "comment": f"第{round_ + 1}次退回"})
        reworks = open_named(world, item_id, "guide_design")
        assert reworks and reworks[0]["return_comment"] == f"第{round_ + 1}次退回"
    do(world, "impl", item_id, "guide_design", {"question_count": 9})
    do(world, "rev_a", item_id, "review_guide_design", APPROVE)
    do(world, "impl", item_id, "entry", {})
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    do(world, "impl", item_id, "go_live", GO_LIVE)
    done = item(world, item_id)
    assert done["status"] == "completed"
    designs = [t for t in done["tasks"] if t["name"] == "guide_design"]
    assert len(designs) == 3 and len({t["id"] for t in designs}) == 3
    # Fixed price: the completed guide counts towards the target but carries no amount.
    entries = world.get("pm", "/api/v1/workload?contract=KP-YTH-2026").get_json()
    assert entries["totals"]["amount"] == 0
    catalog = world.get("pm", "/api/v1/catalog").get_json()
    kp = next(c for c in catalog["contracts"] if c["code"] == "KP-YTH-2026")
    assert next(sl for sl in kp["service_lines"] if sl["code"] == "guide")["targets"] == \
        {"scenario_guides": {"min": 50}}


@pytest.mark.usefixtures("cache_mode")
def test_line_3_item_needs_third_party_report_and_plain_confirmation(world):
    item_id = world.new_item("SH-GJ-1", line="3", mode="iteration", channels=["pc", "mobile"])["id"]
    intake(world, item_id)
    do(world, "impl", item_id, "survey_sorting", {"item_count": 1})
    do(world, "rev_a", item_id, "confirm_survey", APPROVE)
    do(world, "impl", item_id, "design", {})
    do(world, "rev_a", item_id, "confirm_design", APPROVE)
    do(world, "impl", item_id, "build_integration", {"integration_done": True})
    tests = open_named(world, item_id, "tests")[0]
    required = world.get("impl", f"/api/v1/tasks/{tests['id']}").get_json()["required_artefacts"]
    assert [r["kind"] for r in required] == ["third_party_test_report", "security_test_report"]
    # An in-house test report does not satisfy the national-platform gate.
    assert world.upload("impl", item_id, "test_report").status_code == 201
    assert world.upload("impl", item_id, "security_test_report").status_code == 201
    r = world.complete("impl", tests["id"], {"tests_passed": True})
    assert r.status_code == 422 and r.get_json()["missing"] == ["third_party_test_report"]
    do(world, "impl", item_id, "tests", {"tests_passed": True})
    # Iteration: no walkthrough.
    do(world, "impl", item_id, "go_live", GO_LIVE)
    cosign = open_named(world, item_id, "cosign_department")[0]
    required = world.get("rev_a", f"/api/v1/tasks/{cosign['id']}").get_json()["required_artefacts"]
    assert [r["kind"] for r in required] == ["plain_go_live_confirmation"]
    do(world, "rev_a", item_id, "cosign_department", {"confirm": True})
    do(world, "impl", item_id, "cosign_implementer", {"confirm": True})
    done = item(world, item_id)
    assert done["status"] == "completed"
    assert "walkthrough" not in [t["name"] for t in done["tasks"]]
    assert "go_live_confirmation" not in {a["kind"] for a in done["artefacts"]}
