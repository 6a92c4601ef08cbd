"""A service item from intake to billable workload, over HTTP, on SQLite and PostgreSQL, with real S3."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from api.extensions import db
from storage.models import AuditEvent, GatePass, ProcessDefinition, ProcessInstance, WorkloadEntry


def drive_to_survey_review(world, item_id):
    world.complete_task_as("impl", item_id, "intake", {"summary": "新增接入"})
    world.complete_task_as("pm", item_id, "confirm_difficulty",
                           {"difficulty": "1.5", "complexity_note": "跨系统对接"})
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 3})


@pytest.mark.usefixtures("cache_mode")
def test_new_item_full_lifecycle_with_return_and_cosign(world):
    item = world.new_item("SH-NEW-1", mode="new", channels=["pc", "mobile"], attributes={"data_quality": True})
    item_id = item["id"]
    assert item["status"] == "active" and item["stage"] == "intake"

    # The gate refuses with the missing kinds, and nothing changes.
    intake = world.task_named(item_id, "intake")
    r = world.complete("impl", intake["id"], {})
    assert r.status_code == 422
    body = r.get_json()
    assert r.mimetype == "application/problem+json"
    assert body["code"] == "gate_unmet"
    assert set(body["missing"]) == {"requirement_letter", "complexity_statement"}
    assert world.task_named(item_id, "intake")["id"] == intake["id"]

    drive_to_survey_review(world, item_id)

    # The department returns the survey with a comment; a new rework task with a new id carries it.
    review = world.task_named(item_id, "confirm_survey")
    r = world.complete("rev_a", review["id"], {"decision": "return"})
    assert r.status_code == 422 and r.get_json()["code"] == "invalid_form"
    assert "comment" in r.get_json()["errors"]
    old_survey_ids = {t["id"] for t in world.get("pm", f"/api/v1/items/{item_id}").get_json()["tasks"]
                      if t["name"] == "survey_sorting"}
    r = world.complete("rev_a", review["id"], {"decision": "return", "comment": "梳理清单缺少材料字段"})
    assert r.status_code == 200, r.get_json()
    rework = world.task_named(item_id, "survey_sorting")
    assert rework["id"] not in old_survey_ids
    assert rework["return_comment"] == "梳理清单缺少材料字段"
    # The implementer sees the rework in their group inbox with the comment.
    inbox = world.get("impl", "/api/v1/tasks?scope=group").get_json()["tasks"]
    assert any(t["id"] == rework["id"] and t["return_comment"] for t in inbox)

    world.upload("impl", item_id, "sorting_list")  # a revised list
    world.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 4})
    world.complete_task_as("rev_a", item_id, "confirm_survey", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "design")
    world.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve", "comment": "同意"})
    world.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})

    tests = world.task_named(item_id, "tests")
    detail = world.get("impl", f"/api/v1/tasks/{tests['id']}").get_json()
    kinds = {a["kind"] for a in detail["required_artefacts"]}
    assert kinds == {"test_report", "security_test_report", "data_quality_confirmation"}
    assert detail["form"]["properties"]["tests_passed"]["type"] == "boolean"
    world.complete_task_as("impl", item_id, "tests", {"tests_passed": True})

    # New items get the UX walkthrough.
    world.complete_task_as("impl", item_id, "walkthrough")
    world.complete_task_as("impl", item_id, "go_live", {"go_live_date": "2026-11-20"})

    # Co-signed in parallel by the department and the implementer.
    names = {t["name"] for t in world.open_tasks(item_id)}
    assert {"cosign_department", "cosign_implementer"} <= names
    assert world.get("pm", f"/api/v1/items/{item_id}").get_json()["status"] == "active"
    world.complete_task_as("rev_a", item_id, "cosign_department", {"confirm": True})
    assert db.session.execute(select(func.count(WorkloadEntry.id))).scalar() == 0
    world.complete_task_as("impl", item_id, "cosign_implementer", {"confirm": True})

    detail = world.get("pm", f"/api/v1/items/{item_id}").get_json()
    assert detail["status"] == "completed"
    assert not [t for t in detail["tasks"] if t["status"] == "ready"]
    assert any(h["event"] == "task.completed" and h["detail"].get("decision") == "return"
               for h in detail["history"])

    # Workload: one entry per channel, amount = units × difficulty × price of the channel.
    w = world.get("pm", "/api/v1/workload?contract=SH-YWTB-2025").get_json()
    by_channel = {e["channel"]: e for e in w["entries"]}
    assert set(by_channel) == {"pc", "mobile"}
    assert by_channel["pc"]["difficulty"] == 1.5
    assert by_channel["pc"]["amount"] == 67500.00       # 1 × 1.5 × 45,000
    assert by_channel["mobile"]["amount"] == 108000.00  # 1 × 1.5 × 72,000
    assert w["totals"] == {"units": 2.0, "amount": 175500.00}
    assert db.session.execute(select(func.count(GatePass.id))).scalar() > 10


@pytest.mark.usefixtures("cache_mode")
def test_iteration_item_skips_walkthrough_and_needs_change_letter(world):
    item_id = world.new_item("SH-IT-1", mode="iteration", channels=["kiosk"])["id"]
    detail = world.get("impl", f"/api/v1/tasks/{world.task_named(item_id, 'intake')['id']}").get_json()
    assert {a["kind"] for a in detail["required_artefacts"]} == {"change_letter", "complexity_statement"}
    drive_to_survey_review(world, item_id)
    world.complete_task_as("rev_a", item_id, "confirm_survey", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "design")
    world.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve"})
    world.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})
    tests = world.get("impl", f"/api/v1/tasks/{world.task_named(item_id, 'tests')['id']}").get_json()
    assert "data_quality_confirmation" not in {a["kind"] for a in tests["required_artefacts"]}
    world.complete_task_as("impl", item_id, "tests", {"tests_passed": True})
    names = [t["name"] for t in world.open_tasks(item_id)]
    assert names == ["go_live"], "the walkthrough is for new items only"
    world.complete_task_as("impl", item_id, "go_live", {"go_live_date": "2026-11-21"})
    world.complete_task_as("impl", item_id, "cosign_implementer", {"confirm": True})
    world.complete_task_as("rev_a", item_id, "cosign_department", {"confirm": True})
    entries = world.get("pm", "/api/v1/workload").get_json()["entries"]
    assert [(e["channel"], e["mode"], e["amount"]) for e in entries] == [("kiosk", "iteration", 67500.0)]
    walk = [t for t in world.get("pm", f"/api/v1/items/{item_id}").get_json()["tasks"]
            if t["name"] == "walkthrough"]
    assert walk == []


def test_tally_is_idempotent(world, app):
    from engine.money.ledger import tally_item
    from engine.trust import audit
    from storage.models import WorkItem

    item_id = world.new_item("SH-IDEM", channels=["pc"])["id"]
    item = db.session.get(WorkItem, item_id)
    first = tally_item(db.session, audit.SYSTEM, item, item.created_at)
    again = tally_item(db.session, audit.SYSTEM, item, item.created_at)
    db.session.commit()
    assert len(first) == 1 and again == []
    assert db.session.execute(select(func.count(WorkloadEntry.id))).scalar() == 1
    assert first[0].amount == Decimal("45000.00")


def test_completing_twice_and_wrong_role(world):
    item_id = world.new_item("SH-TWICE")["id"]
    for kind in ("requirement_letter", "complexity_statement"):
        assert world.upload("impl", item_id, kind).status_code == 201
    intake = world.task_named(item_id, "intake")
    assert world.complete("pm", intake["id"], {}).status_code == 403
    assert world.complete("impl", intake["id"], {"bogus": 1}).status_code == 422
    assert world.complete("impl", intake["id"], {}).status_code == 200
    r = world.complete("impl", intake["id"], {})
    assert r.status_code == 409 and r.get_json()["code"] == "task_not_ready"
    completed = db.session.execute(select(func.count(AuditEvent.id))
                                   .where(AuditEvent.event_type == "task.completed")).scalar()
    assert completed == 1


def test_claims(world):
    item_id = world.new_item("SH-CLAIM")["id"]
    intake = world.task_named(item_id, "intake")
    assert world.post("impl", f"/api/v1/tasks/{intake['id']}/claim").status_code == 200
    assert world.post("impl", f"/api/v1/tasks/{intake['id']}/claim").status_code == 200
    assert world.post("impl2", f"/api/v1/tasks/{intake['id']}/claim").status_code == 409
    mine = world.get("impl", "/api/v1/tasks?scope=mine").get_json()
    assert [t["id"] for t in mine["tasks"]] == [intake["id"]] and mine["total"] == 1
    assert world.get("impl2", "/api/v1/tasks?scope=group").get_json()["total"] == 0
    assert world.complete("impl2", intake["id"], {}).status_code == 409
    assert world.post("impl", f"/api/v1/tasks/{intake['id']}/unclaim").status_code == 200
    assert world.get("impl2", "/api/v1/tasks?scope=group").get_json()["total"] == 1


def test_department_scope(world):
    item_id = world.new_item("SH-DA", department="DA")["id"]
    drive_to_survey_review(world, item_id)
    review = world.task_named(item_id, "confirm_survey")
    assert world.get("rev_b", f"/api/v1/items/{item_id}").status_code == 404
    assert world.get("rev_b", f"/api/v1/tasks/{review['id']}").status_code == 404
    r = world.complete("rev_b", review["id"], {"decision": "approve"})
    assert r.status_code == 404
    assert world.get("rev_b", "/api/v1/items").get_json()["total"] == 0
    assert world.get("rev_b", "/api/v1/tasks?scope=group").get_json()["total"] == 0
    assert world.get("rev_a", "/api/v1/items").get_json()["total"] == 1
    assert world.upload("rev_b", item_id, "survey_form").status_code == 404
    assert world.get("rev_a", f"/api/v1/items/{item_id}").status_code == 200
    assert world.get("rev_a", "/api/v1/tasks?scope=group").get_json()["total"] == 1


def test_fast_answers_match_the_full_item_and_task_shapes(world):
    """POST /items answers from what it wrote, and task lists come from plain rows: both must equal what the
    full loaders (GET /items/{id}, GET /tasks/{id}) say about the same objects."""
    created = world.new_item("SH-FAST-1", department="DA", channels=["pc"])
    fetched = world.get("pm", f"/api/v1/items/{created['id']}").get_json()
    assert created == fetched
    assert created["tasks"] and created["history"] and created["gates"]

    world.upload("impl", created["id"], "requirement_letter")
    world.upload("impl", created["id"], "complexity_statement")
    intake = world.task_named(created["id"], "intake")
    assert world.post("impl", f"/api/v1/tasks/{intake['id']}/claim").status_code == 200
    done = world.complete("impl", intake["id"], {"summary": "新增接入"}).get_json()
    assert done["next_tasks"], done
    for listed in done["next_tasks"]:
        full = world.get("pm", f"/api/v1/tasks/{listed['id']}").get_json()
        assert listed == {k: full[k] for k in listed}
    inbox = world.get("pm", f"/api/v1/tasks?scope=all&item_id={created['id']}").get_json()
    assert inbox["total"] == len(done["next_tasks"]) == len(inbox["tasks"])
    for listed in inbox["tasks"]:
        full = world.get("pm", f"/api/v1/tasks/{listed['id']}").get_json()
        assert listed == {k: full[k] for k in listed}
    # A claimed task lists its holder.
    following = done["next_tasks"][0]
    assert world.post("pm", f"/api/v1/tasks/{following['id']}/claim").status_code == 200
    mine = world.get("pm", "/api/v1/tasks?scope=mine").get_json()["tasks"]
    assert [t["assignee"] for t in mine if t["id"] == following["id"]] == ["pm"]
    full = world.get("pm", f"/api/v1/tasks/{following['id']}").get_json()
    assert [t for t in mine if t["id"] == following["id"]][0] == {k: full[k] for k in mine[0]}


def test_new_item_names_every_unknown_reference_and_records_nothing(world):
    """The contract, line, department and current definition come in one query; when it finds nothing, each
    unknown reference is still named on its own field, and nothing is written."""
    body = {"contract": "SH-YWTB-2025", "service_line": "1", "name": "事项", "code": "SH-BAD-1",
            "department": "DA", "channels": ["pc"], "mode": "new", "difficulty": 1.0, "attributes": {}}
    cases = [({"contract": "NO-SUCH", "department": "ZZ"}, {"contract", "department"}),
             ({"service_line": "99"}, {"service_line"}),
             ({"department": "ZZ"}, {"department"}),
             ({"service_line": "99", "department": "ZZ", "name": " "}, {"service_line", "department", "name"})]
    for change, fields in cases:
        r = world.post("pm", "/api/v1/items", json=dict(body, **change))
        assert r.status_code == 422, r.get_json()
        assert set(r.get_json()["errors"]) == fields, (change, r.get_json())
    assert not db.session.scalars(select(AuditEvent.event_type).where(AuditEvent.event_type.like("item.%"))).all()
    assert world.get("pm", "/api/v1/items").get_json()["total"] == 0
    # With every reference known: the first item deploys the definition (none is deployed yet), the second
    # finds it in the same query as its contract, line and department.
    first = world.post("pm", "/api/v1/items", json=body).get_json()
    second = world.post("pm", "/api/v1/items", json=dict(body, code="SH-BAD-2")).get_json()
    assert first["status"] == second["status"] == "active" and first["tasks"] and second["tasks"]
    used = db.session.execute(select(ProcessInstance.definition_id).where(
        ProcessInstance.item_id.in_([first["id"], second["id"]]))).scalars().all()
    assert len(used) == 2 and len(set(used)) == 1
    assert db.session.scalar(select(func.count()).select_from(ProcessDefinition)) == 1
