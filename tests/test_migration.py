"""Issue 15 §5: items stranded by a bad timer are moved to a fixed version (dry run, a refused item, the
migration itself) through the API and the CLI, on SQLite and PostgreSQL."""
from __future__ import annotations

from typing import Any

from tests.model_edits import SERVICE_ITEM, with_timer
from tests.test_kinds_api import APPROVE, do, intake, item
from tests.test_model_safety import deploy

BAD_TIMER = with_timer(SERVICE_ITEM, "timeDuration", 'get(attributes, "reminder", "P3D")')
FIXED = with_timer(SERVICE_ITEM, "timeDuration", '"P3D"')


def _renamed_step(xml: str) -> str:
    for pattern in ('id="{}"', 'sourceRef="{}"', 'targetRef="{}"', ">{}</bpmn:flowNodeRef>", 'bpmnElement="{}"',
                    'attachedToRef="{}"'):
        xml = xml.replace(pattern.format("survey_sorting"), pattern.format("survey_and_sorting"))
    return xml.replace('"P3D"', '"P4D"')


def _stuck(world: Any, code: str) -> tuple[int, dict[str, Any]]:
    item_id = world.new_item(code, attributes={"reminder": "soon"})["id"]
    intake(world, item_id)
    task = world.task_named(item_id, "survey_sorting")
    for need in world.get("impl", f"/api/v1/tasks/{task['id']}").get_json()["required_artefacts"]:
        assert world.upload("impl", item_id, need["kind"], task_id=task["id"]).status_code == 201
    r = world.complete("impl", task["id"], {})
    assert r.status_code == 422 and r.get_json()["code"] == "process_error", r.get_json()
    assert r.get_json()["element"] == "confirm_survey_overdue"
    return item_id, task


def migrate(world: Any, target: int, body: dict[str, Any], user: str = "admin") -> Any:
    return world.post(user, f"/api/v1/admin/processes/{target}/migrations", json=body)


def test_items_stranded_by_a_bad_timer_are_migrated_and_complete(world, cli):
    r = deploy(world, BAD_TIMER)
    assert r.status_code == 201, r.get_json()
    bad = r.get_json()["id"]
    first, first_task = _stuck(world, "SH-M-1")
    second, _ = _stuck(world, "SH-M-2")
    assert world.post("impl", f"/api/v1/tasks/{first_task['id']}/claim").status_code == 200

    renamed = deploy(world, _renamed_step(FIXED)).get_json()["id"]
    fixed_r = deploy(world, FIXED)
    assert fixed_r.status_code == 201, fixed_r.get_json()
    fixed = fixed_r.get_json()["id"]
    assert migrate(world, fixed, {"all_running": True}, user="pm").status_code == 403

    # A version whose step has another id: every item is refused, naming the open task; nothing changes.
    dry = migrate(world, renamed, {"all_running": True, "dry_run": True})
    assert dry.status_code == 200, dry.get_json()
    assert [(i["item_id"], i["mappable"], i["unmapped"]) for i in dry.get_json()["items"]] == [
        (first, False, ["survey_sorting"]), (second, False, ["survey_sorting"])]
    real = migrate(world, renamed, {"items": [first], "dry_run": False}).get_json()
    assert real["migrated"] == 0 and real["refused"] == 1 and "survey_sorting" in real["items"][0]["problem"]

    # The dry run to the fixed version: both map, nothing is moved yet.
    # (The final join waits with the third party's confirmed branch: an open element too, mapped by its id.)
    dry = migrate(world, fixed, {"all_running": True, "dry_run": True}).get_json()
    assert [(i["item_id"], i["mappable"], i["mapped"]) for i in dry["items"]] == [
        (first, True, ["gw_final_join", "survey_sorting"]), (second, True, ["gw_final_join", "survey_sorting"])]
    assert dry["migrated"] == 0
    assert world.complete("impl", first_task["id"], {}).status_code == 422  # still on the bad version

    # The CLI migrates the first item (from the bad version), the API the rest.
    out = cli("process", "migrate", "--from", str(bad), "--to", str(renamed), "--dry-run")
    assert out.exit_code == 1 and "REFUSED" in out.output and "survey_sorting" in out.output, out.output
    out = cli("process", "migrate", "--from", str(bad), "--to", str(fixed), "--items", str(first))
    assert out.exit_code == 0, out.output
    assert f"item {first} SH-M-1: migrated" in out.output and "1 of 1 item(s) migrated" in out.output
    rest = migrate(world, fixed, {"all_running": True, "dry_run": False}).get_json()
    assert [(i["item_id"], i["migrated"]) for i in rest["items"]] == [(second, True)]

    # Same task ids, claims kept; the items move on and finish on the fixed version.
    task = world.task_named(first, "survey_sorting")
    assert task["id"] == first_task["id"] and task["assignee"] == "impl"
    for item_id in (first, second):
        do(world, "impl", item_id, "survey_sorting", {})
        do(world, "rev_a", item_id, "confirm_survey", APPROVE)
        assert world.task_named(item_id, "design")
    history = [h["event"] for h in item(world, first)["history"]]
    assert "item.migrated" in history and "item.migration_refused" in history
    listed = {p["id"]: p for p in world.get("admin", "/api/v1/admin/processes").get_json()["processes"]}
    assert listed[fixed]["running_items"] == 2 and listed[bad]["running_items"] == 0


def test_migration_needs_items_or_all_running(world):
    fixed = deploy(world, FIXED).get_json()["id"]
    assert migrate(world, fixed, {"dry_run": True}).status_code == 422
    assert migrate(world, 999_999, {"all_running": True}).status_code == 404
    r = migrate(world, fixed, {"items": [123456], "dry_run": True})
    assert r.status_code == 422 and "not running on another version" in r.get_json()["detail"]
