"""A whole contract as data (issue 16): catalogue kinds, metered records, deliverables, targets, difficulty."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import World


@pytest.fixture
def kaiping(world: World) -> World:
    from api.extensions import db
    from bpmn import CATALOG_DIR
    from engine.catalog import load_catalog_file

    load_catalog_file(db.session, CATALOG_DIR / "kaiping.toml")
    db.session.commit()
    world.user("rev_kp", "dept_reviewer", "KPZSJ")
    return world


def kp_item(w: World, line: str, code: str, **extra: Any) -> dict[str, Any]:
    body = {"contract": "KP-YTH-2026", "service_line": line, "name": f"成果 {code}", "code": code,
            "department": "KPZSJ", **extra}
    r = w.post("pm", "/api/v1/items", json=body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def test_a_training_is_a_deliverable_with_declared_kinds_counted_against_its_target(kaiping: World):
    w = kaiping
    item = kp_item(w, "training", "KP-TR-1")
    assert item["mode"] == "deliverable" and item["channels"] == []
    task = w.task_named(item["id"], "prepare")
    detail = w.get("impl", f"/api/v1/tasks/{task['id']}").get_json()
    required = {r["kind"]: r["title"] for r in detail["required_artefacts"]}
    # Kinds declared only in kaiping.toml's [artefact_kinds], demanded by the gate with their titles.
    assert required == {"training_plan": "培训方案", "training_sign_in": "培训签到表",
                        "training_handout": "培训讲义", "training_photos": "培训现场照片"}
    assert [o["kind"] for o in detail["optional_artefacts"]] == ["training_feedback"]
    r = w.complete("impl", task["id"], {"delivered_on": "2026-03-02", "participants": 40})
    assert r.status_code == 422 and r.get_json()["code"] == "gate_unmet"
    assert set(r.get_json()["missing"]) == set(required)
    up = w.upload("impl", item["id"], "training_sign_in", task_id=task["id"])
    assert up.status_code == 201 and up.get_json()["title"] == "培训签到表"
    assert w.upload("impl", item["id"], "no_such_kind").get_json()["code"] == "unknown_kind"
    w.complete_task_as("impl", item["id"], "prepare", {"delivered_on": "2026-03-02", "participants": 40})
    # Not counted before the department accepts it.
    progress = w.get("pm", "/api/v1/exports/counts?contract=KP-YTH-2026").get_json()["progress"]
    row = next(p for p in progress if p["service_line"] == "training" and p["measure"] == "target:items")
    assert row["done"] == 0 and row["target"] == 1
    w.complete_task_as("rev_kp", item["id"], "review_deliverable", {"decision": "approve"})
    assert w.get("pm", f"/api/v1/items/{item['id']}").get_json()["status"] == "completed"
    progress = w.get("pm", "/api/v1/exports/counts?contract=KP-YTH-2026").get_json()["progress"]
    row = next(p for p in progress if p["service_line"] == "training" and p["measure"] == "target:items")
    assert row["done"] == 1 and row["percent"] == 100.0 and row["on_track"] is True
    assert row["period_start"] == "2026-01-01" and row["period_end"] == "2026-12-31"


def test_kaiping_guide_target_is_reported_with_progress(kaiping: World):
    progress = kaiping.get("pm", "/api/v1/exports/counts?contract=KP-YTH-2026").get_json()["progress"]
    row = next(p for p in progress if p["measure"] == "target:scenario_guides")
    assert row["target"] == 50 and row["done"] == 0 and row["percent"] == 0.0
    assert row["on_track"] in (True, False) and row["service_line"] == "guide"
