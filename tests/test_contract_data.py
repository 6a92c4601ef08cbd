"""A whole contract as data (issue 16): catalogue kinds, metered records, deliverables, targets, difficulty."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import World


@pytest.fixture
def kaiping(world: World) -> World:
    from api.extensions import db
    from bpmn import CATALOG_DIR
    from engine.usecases.admin import load_catalog_file

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


# ---------------------------------------------------------------- all 29 lines, metered records


def test_all_29_shanghai_lines_appear_in_the_catalog_with_units_and_prices(world: World):
    body = world.get("impl", "/api/v1/catalog").get_json()
    sh = next(c for c in body["contracts"] if c["code"] == "SH-YWTB-2025")
    lines = {sl["code"]: sl for sl in sh["service_lines"]}
    assert list(lines) == [str(n) for n in range(1, 30)]
    assert lines["9"]["unit"] == {"code": "call", "name": "次接口调用量"} and lines["9"]["metered"] is True
    assert lines["9"]["unit_prices"] == {"all": 0.004} and lines["9"]["estimated_volumes"] == {"all": 1440000000}
    assert lines["1"]["unit_prices"] == {"pc": 45000.0, "mobile": 72000.0, "kiosk": 45000.0}
    assert lines["1"]["metered"] is False and lines["1"]["unit"]["code"] == "item"
    assert lines["20"]["unit"] == {"code": "person_month", "name": "人月"} and lines["20"]["unit_prices"] == \
        {"all": 20000.0}
    assert lines["29"]["unit_prices"] == {"all": 0.05} and lines["29"]["metered"] is True
    assert {lines[c]["kind"] for c in ("4", "7", "13", "14", "15", "16", "17")} == {"countable"}
    assert lines["13"]["unit"]["name"] == "个接口" and lines["16"]["unit"]["name"] == "个支付场景"
    assert all(sl["unit"]["name"] for sl in lines.values())
    # A kind declared in shanghai.toml, named by a gate, shown with its title.
    design = {r["kind"]: r["title"] for r in lines["7"]["gates"]["design"]}
    assert design["algorithm_design"] == "算法设计方案"


def record(w: World, line: str, code: str, units: int | str, period: str, department: str = "DA") -> Any:
    return w.post("pm", "/api/v1/items", json={
        "contract": "SH-YWTB-2025", "service_line": line, "name": f"计量 {code}", "code": code,
        "department": department, "units": units, "period": period})


def confirm_record(w: World, item_id: int) -> None:
    w.complete_task_as("impl", item_id, "record", {"source": "统一身份认证平台调用统计"})
    confirm = w.task_named(item_id, "confirm_record")
    assert confirm["lane"] == "auditor"
    inbox = w.get("auditor", "/api/v1/tasks?scope=group").get_json()["tasks"]
    assert confirm["id"] in [t["id"] for t in inbox]
    w.complete_task_as("auditor", item_id, "confirm_record", {"decision": "approve"})


def test_a_metered_record_tallies_units_times_price_exactly(world: World):
    from sqlalchemy import select

    from api.extensions import db
    from storage.models import WorkloadEntry

    r = record(world, "9", "SH-IAM-2025-11", 1_440_000_000, "2025-11")
    assert r.status_code == 201, r.get_json()
    item = r.get_json()
    assert item["mode"] == "record" and item["units"] == 1440000000 and item["period"] == "2025-11"
    assert item["out_of_period"] is False
    task = world.task_named(item["id"], "record")
    required = [q["kind"] for q in world.get("impl", f"/api/v1/tasks/{task['id']}").get_json()["required_artefacts"]]
    assert required == ["record_statistics", "monthly_work_orders", "operations_report", "monitoring_records"]
    # Nothing counts before the third party confirms it.
    confirm_record(world, item["id"])
    entries = world.get("pm", "/api/v1/workload?contract=SH-YWTB-2025").get_json()
    mine = [e for e in entries["entries"] if e["item_id"] == item["id"]]
    assert [(e["channel"], e["units"], e["unit_price"], e["amount"]) for e in mine] == \
        [("all", 1440000000.0, 0.004, 5760000.0)]
    assert entries["totals"]["amount"] == 5760000.0
    stored = db.session.execute(select(WorkloadEntry).where(WorkloadEntry.item_id == item["id"])).scalar_one()
    assert Decimal(stored.amount) == Decimal("5760000.00") and Decimal(stored.unit_price) == Decimal("0.004")
    # Counted in the period's month, whenever it was confirmed.
    counts = world.get("pm", "/api/v1/exports/counts?contract=SH-YWTB-2025").get_json()["counts"]
    assert [(c["service_line"], c["month"], c["amount"]) for c in counts] == [("9", "2025-11", 5760000.0)]


def test_amounts_round_only_at_the_totals(world: World):
    ids = []
    for n in range(3):
        r = record(world, "9", f"SH-IAM-SMALL-{n}", 1001, f"2025-0{n + 1}")
        assert r.status_code == 201, r.get_json()
        ids.append(r.get_json()["id"])
        confirm_record(world, ids[-1])
    body = world.get("pm", "/api/v1/workload?contract=SH-YWTB-2025").get_json()
    # 3 × (1001 × 0.004 = 4.004) = 12.012 → 12.01; rounding each entry first would give 12.00.
    assert body["totals"]["amount"] == 12.01


def test_a_record_needs_units_and_period_and_is_flagged_or_refused_out_of_period(world: World):
    from api.extensions import db
    from storage.models import Contract

    bad = record(world, "9", "SH-IAM-X", 0, "2025-10")
    assert bad.status_code == 422 and "units" in bad.get_json()["errors"]
    bad = record(world, "9", "SH-IAM-X", 10, "2025-13")
    assert bad.status_code == 422 and "period" in bad.get_json()["errors"]
    r = world.post("pm", "/api/v1/items", json={"contract": "SH-YWTB-2025", "service_line": "29", "name": "短信",
                                                "code": "SMS-1", "department": "DA", "period": "2025-10"})
    assert r.status_code == 422 and "units" in r.get_json()["errors"]
    flagged = record(world, "29", "SMS-2026-11", 100000, "2026-11")
    assert flagged.status_code == 201 and flagged.get_json()["out_of_period"] is True
    contract = db.session.query(Contract).filter_by(code="SH-YWTB-2025").one()
    contract.settings = {**contract.settings, "out_of_period": "refuse"}
    db.session.commit()
    refused = record(world, "29", "SMS-2026-12", 100000, "2026-12")
    assert refused.status_code == 422 and refused.get_json()["code"] == "out_of_period"
    assert record(world, "29", "SMS-2025-12", 100000, "2025-12").status_code == 201


# ---------------------------------------------------------------- evidence rules as the seed writes them


def drive_to_walkthrough(w: World, item_id: int) -> dict[str, Any]:
    w.complete_task_as("impl", item_id, "intake", {"summary": "迭代"})
    w.complete_task_as("pm", item_id, "confirm_difficulty", {"difficulty": "1.2", "complexity_note": "跨系统对接"})
    w.complete_task_as("impl", item_id, "survey_sorting", {"item_count": 3})
    w.complete_task_as("rev_a", item_id, "confirm_survey", {"decision": "approve"})
    w.complete_task_as("impl", item_id, "design", {})
    w.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve"})
    w.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})
    w.complete_task_as("impl", item_id, "tests", {"tests_passed": True})
    return w.task_named(item_id, "walkthrough")


def test_a_line_6_iteration_demands_the_walkthrough(world: World):
    item = world.new_item("SH-ZT-IT-1", mode="iteration", line="6")
    walk = drive_to_walkthrough(world, item["id"])
    detail = world.get("impl", f"/api/v1/tasks/{walk['id']}").get_json()
    assert [r["kind"] for r in detail["required_artefacts"]] == ["walkthrough_confirmation"]
    r = world.complete("impl", walk["id"], {})
    assert r.status_code == 422 and r.get_json()["missing"] == ["walkthrough_confirmation"]


def test_a_line_1_iteration_skips_the_walkthrough_and_no_line_1_to_3_item_needs_the_survey_form(world: World):
    item = world.new_item("SH-IT-1", mode="iteration", line="1")
    world.complete_task_as("impl", item["id"], "intake", {"summary": "迭代"})
    world.complete_task_as("pm", item["id"], "confirm_difficulty", {"difficulty": "1.0", "complexity_note": "常规"})
    survey = world.task_named(item["id"], "survey_sorting")
    detail = world.get("impl", f"/api/v1/tasks/{survey['id']}").get_json()
    assert detail["required_artefacts"] == []
    assert [o["kind"] for o in detail["optional_artefacts"]] == ["survey_form", "sorting_list"]
    # Completed with no survey form or sorting list at all.
    assert world.complete("impl", survey["id"], {"item_count": 2}).status_code == 200
    for line in ("2", "3"):
        other = world.new_item(f"SH-SV-{line}", line=line, channels=["pc"])
        world.complete_task_as("impl", other["id"], "intake", {"summary": "新增"})
        world.complete_task_as("pm", other["id"], "confirm_difficulty", {"difficulty": "1.0",
                                                                          "complexity_note": "常规"})
        task = world.task_named(other["id"], "survey_sorting")
        assert world.complete("impl", task["id"], {"item_count": 1}).status_code == 200


CATALOG = """
[contract]
code = "T-16"
name = "测试合同"

[artefact_kinds]
site_photos = { title = "现场照片", title_en = "Site photos" }

[[service_lines]]
code = "g"
name = "导办"
unit = "个事项"
process = "scenario_guide"
channels = ["pc"]
unit_prices = { pc = 1 }
[service_lines.gates]
guide_list = [{ kind = "guide_item_list" }]
guide_design = [{ kind = "guide_design" }, { kind = "site_photos" }]
tests = []
go_live = []
"""


def test_a_catalogue_whose_gate_can_never_be_met_is_refused_naming_the_line():
    from engine.contract.catalog import CatalogError, parse_catalog

    parsed = parse_catalog(CATALOG, "t.toml")
    assert parsed["contract"]["settings"]["artefact_kinds"]["site_photos"]["title"] == "现场照片"
    never = CATALOG.replace("go_live = []", 'go_live = []\nwalkthrough = [{ kind = "walkthrough_confirmation" }]')
    with pytest.raises(CatalogError, match=r"service_lines\[0\] \(code 'g'\): gate 'walkthrough' requires "
                                           r"\['walkthrough_confirmation'\] but no step"):
        parse_catalog(never, "t.toml")
    unknown = CATALOG.replace('{ kind = "site_photos" }', '{ kind = "site_fotos" }')
    with pytest.raises(CatalogError, match=r"code 'g'\): gates.guide_design\[1\]: unknown artefact kind 'site_fotos'"):
        parse_catalog(unknown, "t.toml")
    # A step the model takes only for new items, while the rules require its evidence of iterations too.
    from engine.contract.catalog import check_reachable

    with pytest.raises(CatalogError, match="skips that step for \\['iteration'\\]"):
        check_reachable({"walkthrough": [{"kind": "walkthrough_confirmation", "when": {}}]}, {"walkthrough"},
                        {"walkthrough": {"new"}}, "line 6")


# ---------------------------------------------------------------- difficulty confirmed by the third party


def test_difficulty_counts_only_once_the_auditor_confirms_it(world: World):
    w = world
    w.auto_confirm_difficulty = False
    r = w.post("pm", "/api/v1/items", json={"contract": "SH-YWTB-2025", "service_line": "7", "name": "AI 模型",
                                            "code": "SH-AI-1", "department": "DA", "mode": "new"})
    assert r.status_code == 201, r.get_json()
    item_id = r.get_json()["id"]
    w.complete_task_as("impl", item_id, "intake", {"summary": "新增模型"})
    propose = w.task_named(item_id, "confirm_difficulty")
    w.upload("pm", item_id, "model_implementation", task_id=propose["id"])
    # Only the contract's levels for line 7.
    bad = w.complete("pm", propose["id"], {"difficulty": "1.3", "complexity_note": "多源数据"})
    assert bad.status_code == 422 and "difficulty" in bad.get_json()["errors"]
    assert w.complete("pm", propose["id"], {"difficulty": "1.2", "complexity_note": "多源数据"}).status_code == 200
    review = w.task_named(item_id, "review_difficulty")
    assert review["lane"] == "auditor"
    assert review["id"] in [t["id"] for t in w.get("auditor", "/api/v1/tasks?scope=group").get_json()["tasks"]]
    assert w.complete("pm", review["id"], {"verdict": "confirm"}).status_code == 403
    no_reason = w.complete("auditor", review["id"], {"verdict": "set", "difficulty": "1.5"})
    assert no_reason.status_code == 422 and "reason" in no_reason.get_json()["errors"]
    assert w.complete("auditor", review["id"], {"verdict": "set", "difficulty": "1.5",
                                                 "reason": "涉及跨部门数据协同"}).status_code == 200
    item = w.get("pm", f"/api/v1/items/{item_id}").get_json()
    assert item["difficulty"] == 1.5 and item["difficulty_proposed_by"] == "pm"
    assert item["difficulty_confirmed_by"] == "auditor"
    w.complete_task_as("impl", item_id, "design", {})
    w.complete_task_as("rev_a", item_id, "confirm_design", {"decision": "approve"})
    w.complete_task_as("impl", item_id, "build_integration", {"integration_done": True})
    w.complete_task_as("impl", item_id, "tests", {"tests_passed": True})
    # Line 7 asks for no walkthrough: the step is not taken.
    w.complete_task_as("impl", item_id, "go_live", {"go_live_date": "2025-06-30"})
    w.complete_task_as("rev_a", item_id, "cosign_department", {"confirm": True})
    w.complete_task_as("impl2", item_id, "cosign_implementer", {"confirm": True})
    item = w.get("pm", f"/api/v1/items/{item_id}").get_json()
    assert item["status"] == "completed" and item["go_live_date"] == "2025-06-30"
    entries = [e for e in w.get("pm", "/api/v1/workload").get_json()["entries"] if e["item_id"] == item_id]
    assert [(e["channel"], e["difficulty"], e["amount"], e["difficulty_proposed_by"],
             e["difficulty_confirmed_by"]) for e in entries] == [("all", 1.5, 142500.0, "pm", "auditor")]
    # The detail sheet: 上线日期 from the go-live step, the completion time beside it, who proposed/confirmed.
    import csv
    import io

    rows = list(csv.reader(io.StringIO(w.get("pm", "/api/v1/exports/workload.csv").data.decode("utf-8-sig"))))
    header, row = rows[0], next(r for r in rows if len(r) > 4 and r[4] == "SH-AI-1")
    assert row[header.index("上线日期")] == "2025-06-30"
    assert row[header.index("完成时间")] and row[header.index("完成时间")][:10] != "2025-06-30"
    assert row[header.index("难度系数提出人")] == "pm" and row[header.index("难度系数确认人")] == "auditor"


def test_the_demo_loads_both_contracts_with_periods_covering_today(app, store):
    from datetime import date, datetime

    from sqlalchemy import select

    from api.demo import cover_today, load_demo
    from api.extensions import db
    from engine.contract.calendar import TZ
    from storage.models import Contract

    load_demo(app, store, echo=lambda _line: None)
    today = datetime.now(TZ).date()
    contracts = {c.code: c for c in db.session.scalars(select(Contract))}
    assert set(contracts) == {"SH-YWTB-2025", "KP-YTH-2026"}
    for contract in contracts.values():
        assert contract.period_start <= today <= contract.period_end
    probe = Contract(code="P", name="p", period_start=date(2025, 1, 1), period_end=date(2025, 12, 31))
    assert cover_today(probe, date(2027, 3, 1)) and (probe.period_start, probe.period_end) == \
        (date(2027, 1, 1), date(2027, 12, 31))
    assert cover_today(probe, date(2024, 2, 29)) and probe.period_start == date(2024, 1, 1)
    assert not cover_today(probe, date(2024, 6, 1))


def test_the_web_shows_declared_kind_titles_and_target_progress(kaiping: World, app):
    from tests.test_web import Browser

    item = kp_item(kaiping, "training", "KP-TR-WEB")
    task = kaiping.task_named(item["id"], "prepare")
    page = Browser(app, "impl").get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert "培训签到表" in page and "培训现场照片" in page
    board = Browser(app, "pm").get("/dashboard").get_data(as_text=True)
    assert 'id="targets"' in board and 'data-measure="target:scenario_guides"' in board and "≥ 50" in board


def test_the_web_task_page_lists_optional_working_documents_as_optional(world: World, app):
    from tests.test_web import Browser

    item = world.new_item("SH-OPT-1", mode="new", line="1")
    world.complete_task_as("impl", item["id"], "intake", {"summary": "新增"})
    world.complete_task_as("pm", item["id"], "confirm_difficulty", {"difficulty": "1.0", "complexity_note": "常规"})
    survey = world.task_named(item["id"], "survey_sorting")
    page = Browser(app, "impl").get(f"/tasks/{survey['id']}").get_data(as_text=True)
    assert 'class="gate-row optional" data-kind="survey_form"' in page and 'id="file-sorting_list"' in page
    assert 'class="gate-row missing"' not in page
