"""Issue 15: a deployed model can never hang, crash or strand — budgets during evaluation, bounded state, 422
naming the element instead of 500, and deploy checks that cover what the engine will do."""
from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest

import bpmn
from engine.runtime.expressions import Budget, ExpressionError, configure_budget, current_budget, deadline, execute
from engine.usecases.processes import MAX_MODEL_BYTES
from tests.model_edits import SERVICE_ITEM, renamed, with_script, with_timer
from tests.test_kinds_api import intake


def deploy(world: Any, xml: str, filename: str = "service_item.bpmn") -> Any:
    return world.multipart("admin", "/api/v1/admin/processes", {"file": (io.BytesIO(xml.encode("utf-8")), filename)})


def refused(world: Any, xml: str, element: str, text: str) -> dict[str, Any]:
    r = deploy(world, xml)
    assert r.status_code == 422, r.get_json()
    body = r.get_json()
    assert body["code"] == "model_invalid"
    assert any(p["element"] == element and text in p["problem"] for p in body["problems"]), body["problems"]
    assert world.get("admin", "/api/v1/admin/processes").get_json()["processes"] == []
    return body


def finishes(fn: Any, seconds: float = 10.0) -> Any:
    """Run fn in a thread; the test fails (instead of hanging) when it does not finish in time."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 — handed back to the test
            out["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s: no budget stopped it"
    out["seconds"] = time.monotonic() - started
    return out


# ---------------------------------------------------------------- 1. budgets during evaluation

def test_exponential_comparison_is_stopped_by_the_budget():
    script = "a = [1]\n" + "a = [a, a]\n" * 60 + "b = [a] == [a]\nh = str(a)"
    out = finishes(lambda: execute(script, {}))
    assert isinstance(out.get("error"), ExpressionError), out
    assert "budget" in out["error"].reason and out["seconds"] < 15


@pytest.mark.parametrize("script", [
    "s = 'x' * 100000\nl = [s] * 100000\nt = str(l)",
    "s = 'x' * 100000\nl = [s] * 100000\nt = f'{l}'",
    "a = [0] * 1000\nb = [a] * 900\na[0] = 'x' * 90000\nt = str(b)",
    "l = [[0]] * 100000\nt = sum(l, [])",
    "d = {}\nd['self'] = d",
])
def test_huge_formatting_and_aliasing_are_stopped(script):
    out = finishes(lambda: execute(script, {}))
    assert isinstance(out.get("error"), ExpressionError), out
    assert out["seconds"] < 15  # a hang is what this catches (budget 1 s); loose for a loaded CI machine


def test_wall_time_budget_is_configurable_and_tick_deadline_bounds_it():
    slow = "l = [9, 1, 8, 2] * 25000\n" + "s = sorted(l)\n" * 400
    before = current_budget()
    configure_budget(Budget(steps=10**12, size=10**9, seconds=0.05))
    try:
        out = finishes(lambda: execute(slow, {}))
    finally:
        configure_budget(before)
    assert isinstance(out.get("error"), ExpressionError) and "longer than 0.05 s" in out["error"].reason
    with deadline(0.05):
        out = finishes(lambda: execute(slow, {}))
    assert isinstance(out.get("error"), ExpressionError), out
    execute("x = sorted([3, 1, 2])", {})  # ordinary scripts are untouched


# ---------------------------------------------------------------- timers at deploy

@pytest.mark.parametrize(("kind", "expression", "text"), [
    ("timeDuration", '"P99999999Y"', "longer than 10 years"),
    ("timeCycle", '"R100000/PT0S"', "more than 1000 times"),
    ("timeCycle", '"R3/PT0S"', "zero length"),
    ("timeDuration", "P3D", "bare name"),
    ("timeDate", '"next tuesday"', "not an ISO 8601 date-time"),
])
def test_bad_timers_are_refused_at_deploy(world, kind, expression, text):
    refused(world, with_timer(SERVICE_ITEM, kind, expression), "confirm_survey_overdue", text)


def test_timer_naming_a_form_field_or_quoted_constant_deploys(world):
    assert deploy(world, with_timer(SERVICE_ITEM, "timeDuration", '"P3D"')).status_code == 201


# ---------------------------------------------------------------- 2. bounded state; 3. 422 instead of 500

def _raw_deploy(xml: str) -> None:
    """Install a model the way an older ItemGate would have (without today's checks)."""
    from api.extensions import db
    from engine.usecases.tasks import deploy_definition

    deploy_definition(db.session, "service_item", xml, "old.bpmn", None)
    db.session.commit()


def _no_items(world: Any) -> None:
    assert world.get("pm", "/api/v1/items").get_json()["total"] == 0


def test_script_error_right_after_start_is_422_naming_the_element(world):
    _raw_deploy(with_script(SERVICE_ITEM, "flow_start_to_intake", "bad_script", "x = 1 / 0"))
    r = world.post("pm", "/api/v1/items", json={
        "contract": "SH-YWTB-2025", "service_line": "1", "name": "事项", "code": "SH-E-1", "department": "DA",
        "channels": ["pc"], "mode": "new"})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["code"] == "process_error" and r.get_json()["element"] == "bad_script"
    _no_items(world)


def test_circular_task_data_is_422_at_creation_and_at_completion(world):
    _raw_deploy(with_script(SERVICE_ITEM, "flow_intake_to_confirm_difficulty", "loop_data",
                            "d = {}\nd['me'] = d"))
    item_id = world.new_item("SH-C-1")["id"]
    task = world.task_named(item_id, "intake")
    for kind in ("requirement_letter", "complexity_statement"):
        world.upload("impl", item_id, kind, task_id=task["id"])
    r = world.complete("impl", task["id"], {"summary": "x"})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["code"] == "process_error" and r.get_json()["element"] == "loop_data"
    assert world.task_named(item_id, "intake")["id"] == task["id"]  # nothing moved


def test_instance_state_is_bounded(world):
    script = "\n".join(f"v{i} = 'x' * 90000" for i in range(14))  # ~1.2 MB, each value within the budget
    deploy_r = deploy(world, with_script(SERVICE_ITEM, "flow_intake_to_confirm_difficulty", "bloat", script))
    # The simulation runs it once at deploy: the bloat is found before any item carries it.
    assert deploy_r.status_code == 422, deploy_r.get_json()
    assert any(p["element"] == "bloat" and "KiB" in p["problem"] for p in deploy_r.get_json()["problems"])
    _raw_deploy(with_script(SERVICE_ITEM, "flow_intake_to_confirm_difficulty", "bloat", script))
    item_id = world.new_item("SH-B-1")["id"]
    task = world.task_named(item_id, "intake")
    for kind in ("requirement_letter", "complexity_statement"):
        world.upload("impl", item_id, kind, task_id=task["id"])
    r = world.complete("impl", task["id"], {"summary": "x"})
    assert r.status_code == 422, r.get_json()
    body = r.get_json()
    assert body["code"] == "process_error" and body["element"] == "bloat" and "1024 KiB" in body["detail"]
    from api.extensions import db
    from storage.models import ProcessInstance

    db.session.expire_all()
    assert max(len(i.state) for i in db.session.query(ProcessInstance)) < 200_000  # nothing saved


def test_runtime_timer_garbage_fails_the_completion_naming_the_element(world):
    xml = with_timer(SERVICE_ITEM, "timeDuration", 'get(attributes, "reminder", "P3D")')
    assert deploy(world, xml).status_code == 201
    item_id = world.new_item("SH-T-9", attributes={"reminder": "soon"})["id"]
    intake(world, item_id)
    task = world.task_named(item_id, "survey_sorting")
    for need in world.get("impl", f"/api/v1/tasks/{task['id']}").get_json()["required_artefacts"]:
        world.upload("impl", item_id, need["kind"], task_id=task["id"])
    r = world.complete("impl", task["id"], {})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["code"] == "process_error"
    assert r.get_json()["element"] == "confirm_survey_overdue"
    assert "timeDuration" in r.get_json()["detail"]


def test_quote_in_process_id_is_refused_cleanly(world):
    body = refused(world, renamed(SERVICE_ITEM, "service_item", "service'item"), "intake", "declared by no")
    assert "Traceback" not in str(body)


def test_spiffworkflow_parse_errors_name_the_element(world):
    xml = SERVICE_ITEM.replace(
        '<bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">not needs_walkthrough</bpmn:conditionExpression>',
        "")
    assert xml != SERVICE_ITEM  # the condition the edit removes is in the shipped model
    body = refused(world, xml, "flow_gw_walkthrough_to_gw_walkthrough_merge", "without condition")
    problem = next(p["problem"] for p in body["problems"])
    assert "default flow" in problem and "0x" not in problem


def test_data_association_error_has_no_object_repr(world):
    xml = SERVICE_ITEM.replace(
        '<bpmn:incoming>flow_survey_sorting_to_confirm_survey</bpmn:incoming>',
        '<bpmn:incoming>flow_survey_sorting_to_confirm_survey</bpmn:incoming><bpmn:dataInputAssociation id="dia">'
        '<bpmn:sourceRef>nothing_here</bpmn:sourceRef></bpmn:dataInputAssociation>', 1)
    body = refused(world, xml, "confirm_survey", "Cannot resolve dataInputAssociation")
    assert all("0x" not in p["problem"] for p in body["problems"])


def test_model_too_deep_for_the_parser_says_so(world):
    from engine.runtime import spiff

    def too_deep(*_: Any, **__: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    original = spiff.SpiffBpmnParser.add_bpmn_xml
    spiff.SpiffBpmnParser.add_bpmn_xml = too_deep  # type: ignore[method-assign]
    try:
        refused(world, SERVICE_ITEM.replace("接入完成", "接入完成 "), "(document)", "nested too deeply")
    finally:
        spiff.SpiffBpmnParser.add_bpmn_xml = original  # type: ignore[method-assign]


def test_valid_utf8_just_over_the_limit_is_too_large(world):
    filler = "中" * ((MAX_MODEL_BYTES - len(SERVICE_ITEM.encode()) - 10) // 3 + 10)
    xml = SERVICE_ITEM + f"<!-- {filler} -->"
    assert len(xml.encode()) > MAX_MODEL_BYTES
    r = deploy(world, xml)
    assert r.status_code == 422
    assert "too large" in r.get_json()["detail"]


# ---------------------------------------------------------------- 4. the deploy check covers what the engine does

def test_manual_tasks_are_checked_like_user_tasks(world):
    xml = SERVICE_ITEM.replace('<bpmn:userTask id="walkthrough" name="体验走查">',
                               '<bpmn:manualTask id="walkthrough" name="体验走查">')
    start = xml.index('<bpmn:manualTask id="walkthrough"')
    end = xml.index("</bpmn:userTask>", start)
    xml = xml[:end] + "</bpmn:manualTask>" + xml[end + len("</bpmn:userTask>"):]
    xml = xml.replace('<spiffworkflow:property name="form" value="walkthrough"/>', "")
    refused(world, xml, "walkthrough", "manual task has no 'form' property")


def test_model_without_tasks_is_refused(world):
    empty = bpmn.read_model("service_item")
    start = empty.index('<bpmn:process id="service_item"')
    end = empty.index("</bpmn:process>") + len("</bpmn:process>")
    empty = empty[:start] + (
        '<bpmn:process id="service_item" isExecutable="true"><bpmn:startEvent id="s"/>'
        '<bpmn:endEvent id="e"/><bpmn:sequenceFlow id="f" sourceRef="s" targetRef="e"/></bpmn:process>'
    ) + empty[end:]
    empty = empty[:empty.index("<bpmndi:BPMNDiagram")] + "</bpmn:definitions>"
    refused(world, empty, "service_item", "no user or manual task")


def test_gate_no_line_declares_is_refused(world):
    refused(world, renamed(SERVICE_ITEM, "service_item", "new_kind"), "intake",
            "gate 'intake' is declared by no contract line")


def test_settlement_model_is_refused_plainly(world):
    body = refused(world, bpmn.read_model("settlement"), "settlement", "built-in settlement process")
    assert len(body["problems"]) == 1


def test_unreachable_element_is_refused(world):
    xml = SERVICE_ITEM.replace("</bpmn:process>", '<bpmn:task id="orphan" name="孤立"/></bpmn:process>')
    refused(world, xml, "orphan", "not reachable from the start event")


def test_gateway_whose_conditions_can_all_be_false_needs_a_default(world):
    xml = SERVICE_ITEM.replace(
        '''targetRef="gw_survey_merge" name="退回修改">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">decision == "return"''',
        '''targetRef="gw_survey_merge" name="退回修改">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">decision == "rejected"''')
    refused(world, xml, "gw_survey_decision", "decision='return'")


def test_simulation_refuses_a_dead_end_path_and_reports_it(world):
    xml = SERVICE_ITEM.replace('<bpmn:exclusiveGateway id="gw_walkthrough_merge">',
                               '<bpmn:parallelGateway id="gw_walkthrough_merge">')
    start = xml.index('<bpmn:parallelGateway id="gw_walkthrough_merge">')
    end = xml.index("</bpmn:exclusiveGateway>", start)
    xml = xml[:end] + "</bpmn:parallelGateway>" + xml[end + len("</bpmn:exclusiveGateway>"):]
    body = refused(world, xml, "tests", "never reaches an end")
    problem = next(p["problem"] for p in body["problems"] if "never reaches" in p["problem"])
    assert "start (mode=" in problem and "confirm_design[decision=approve]" in problem


def test_shipped_models_deploy(world):
    for process_id in ("service_item", "one_thing", "e_licence"):  # scenario_guide runs on Kaiping's lines
        r = deploy(world, bpmn.read_model(process_id), f"{process_id}.bpmn")
        assert r.status_code == 201, (process_id, r.get_json())


# ---------------------------------------------------------------- tick: one bad instance never stalls the others

SLOW = "x = 1\n" + "if get(attributes, 'slow', False):\n" + "    l = [9, 1, 8, 2] * 25000\n" + \
    "    s = sorted(l)\n" * 500


def _reminder_runs_script(xml: str) -> str:
    """The first review's reminder goes on to a script task (slow for items whose attributes ask for it)."""
    body = SLOW.replace("&", "&amp;").replace("<", "&lt;")
    added = ('<bpmn:scriptTask id="after_reminder" name="提醒后处理"><bpmn:script>' + body + "</bpmn:script>"
             '</bpmn:scriptTask><bpmn:endEvent id="reminder_done"/>'
             '<bpmn:sequenceFlow id="flow_reminder" sourceRef="confirm_survey_overdue" targetRef="after_reminder"/>'
             '<bpmn:sequenceFlow id="flow_reminder_done" sourceRef="after_reminder" targetRef="reminder_done"/>')
    return xml.replace("</bpmn:process>", added + "</bpmn:process>", 1)


def test_tick_bounds_each_instance_and_the_others_get_their_reminders(world):
    from datetime import UTC, datetime, timedelta

    from api.background import fire_due_timers
    from api.extensions import db
    from engine.runtime import budgets
    from storage.models import Notification
    from tests.test_deadlines import frozen

    assert deploy(world, _reminder_runs_script(SERVICE_ITEM)).status_code == 201
    items = {}
    with frozen("2026-09-29 02:00:00", world):  # the review is due 2026-10-12, long past by the clock now
        for code, slow in (("SH-TICK-SLOW", True), ("SH-TICK-OK", False)):
            item_id = world.new_item(code, attributes={"slow": slow})["id"]
            intake(world, item_id)
            world.complete_task_as("impl", item_id, "survey_sorting", {})
            items[code] = item_id
    before = budgets.LIMITS.tick_instance_seconds
    budgets.LIMITS.tick_instance_seconds = 0.2
    try:
        started = time.monotonic()
        fired = fire_due_timers(db.session, datetime.now(UTC) + timedelta(days=1))
        took = time.monotonic() - started
    finally:
        budgets.LIMITS.tick_instance_seconds = before
    assert took < 15 and fired == 1, (took, fired)  # stopped by the budget (a loaded machine is slower)
    reminded = {n.item_id for n in db.session.query(Notification).filter(Notification.kind == "reminder")}
    assert reminded == {items["SH-TICK-OK"]}
