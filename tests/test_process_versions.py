"""Process versions: deploying validates a model (errors name the element); new items use the new version,
running items stay on theirs."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

import bpmn
from bpmn import CATALOG_DIR
from tests.test_kinds_api import APPROVE, do, intake, item

SERVICE_ITEM = bpmn.read_model("service_item")


def deploy(world: Any, xml: str, user: str = "admin", filename: str = "service_item.bpmn") -> Any:
    return world.post(user, "/api/v1/admin/processes",
                      data={"file": (io.BytesIO(xml.encode("utf-8")), filename)},
                      content_type="multipart/form-data")


BROKEN = {
    "invalid_xml": (lambda x: x[: len(x) // 2], "(document)", "not well-formed XML"),
    "unknown_lane": (lambda x: x.replace('name="dept_reviewer"', 'name="reviewer"'), "lane_dept_reviewer",
                     "lane name 'reviewer' is not a role"),
    "missing_form": (lambda x: x.replace('<spiffworkflow:property name="form" value="design"/>', ''), "design",
                     "user task has no 'form' property"),
    "unknown_form": (lambda x: x.replace('value="build_integration"/>', 'value="build_everything"/>'),
                     "build_integration", "unknown form 'build_everything'"),
    "unknown_gate": (lambda x: x.replace('<spiffworkflow:property name="gate" value="go_live"/>',
                                         '<spiffworkflow:property name="gate" value="accessibility"/>'),
                     "go_live", "gate 'accessibility' has no rules in contract SH-YWTB-2025 line 1"),
    "unsafe_condition": (lambda x: x.replace('>needs_walkthrough<', ">__import__('os').system('id')<"),
                         "flow_gw_walkthrough_to_walkthrough", "not allowed"),
    "unsafe_timer": (lambda x: x.replace(">due_at_iso</bpmn:timeDate>", ">().__class__.__bases__</bpmn:timeDate>", 1),
                     "review_difficulty_overdue", "timer timeDate"),  # the first timeDate in the file
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_models_are_rejected_naming_the_element(world, case):
    edit, element, problem = BROKEN[case]
    broken = edit(SERVICE_ITEM)
    assert broken != SERVICE_ITEM
    r = deploy(world, broken)
    assert r.status_code == 422, r.get_json()
    body = r.get_json()
    assert body["code"] == "model_invalid"
    assert any(p["element"] == element and problem in p["problem"] for p in body["problems"]), body["problems"]
    assert f"element '{element}'" in body["detail"] or element == "(document)"
    listed = world.get("admin", "/api/v1/admin/processes").get_json()["processes"]
    assert listed == []  # nothing was deployed


def test_only_admins_deploy(world):
    assert deploy(world, SERVICE_ITEM, user="pm").status_code == 403


def test_new_version_is_used_by_new_items_while_running_items_stay(world):
    first = world.new_item("SH-V-1")
    v2 = SERVICE_ITEM.replace('name="需求分析与功能设计"', 'name="需求分析与功能设计（第二版）"')
    r = deploy(world, v2)
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["is_current"] and r.get_json()["running_on_previous_versions"] == 1
    second = world.new_item("SH-V-2")
    for item_id in (first["id"], second["id"]):
        intake(world, item_id)
        do(world, "impl", item_id, "survey_sorting", {})
        do(world, "rev_a", item_id, "confirm_survey", APPROVE)
    titles = {i: world.task_named(i, "design")["title"] for i in (first["id"], second["id"])}
    assert titles == {first["id"]: "需求分析与功能设计", second["id"]: "需求分析与功能设计（第二版）"}
    processes = world.get("admin", "/api/v1/admin/processes").get_json()["processes"]
    assert [(p["process_id"], p["is_current"]) for p in processes] == [("service_item", False),
                                                                      ("service_item", True)]
    # Re-deploying the first version makes it current again without a new row.
    r = deploy(world, SERVICE_ITEM)
    assert r.status_code == 200 and r.get_json()["created"] is False
    third = world.new_item("SH-V-3")
    intake(world, third["id"])
    do(world, "impl", third["id"], "survey_sorting", {})
    do(world, "rev_a", third["id"], "confirm_survey", APPROVE)
    assert world.task_named(third["id"], "design")["title"] == "需求分析与功能设计"
    assert item(world, second["id"])["status"] == "active"
    history = [h["event"] for h in world.get("admin", f"/api/v1/items/{first['id']}").get_json()["history"]]
    assert "item.created" in history


def test_cli_process_deploy(tmp_path: Path, app: Any, cli: Any):
    assert cli("db", "upgrade").exit_code == 0
    assert cli("catalog", "load", str(CATALOG_DIR / "shanghai.toml")).exit_code == 0
    bad = tmp_path / "bad.bpmn"
    bad.write_text(BROKEN["unknown_gate"][0](SERVICE_ITEM), encoding="utf-8")
    result = cli("process", "deploy", str(bad))
    assert result.exit_code == 1
    assert "go_live: gate 'accessibility' has no rules in contract SH-YWTB-2025 line 1" in result.output
    good = tmp_path / "service_item.bpmn"
    good.write_text(SERVICE_ITEM, encoding="utf-8")
    result = cli("process", "deploy", str(good))
    assert result.exit_code == 0, result.output
    assert "deployed as a new version" in result.output
    again = cli("process", "deploy", str(good))
    assert "already deployed" in again.output
