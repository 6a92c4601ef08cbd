"""The BPMN process models: structure the engine relies on, and every path driven to completion."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState

from engine.runtime import spiff
from engine.runtime.modelcheck import TASK_PROPERTIES
from engine.runtime.workkinds import work_kind_ids

BPMN_DIR = Path(__file__).resolve().parents[1] / "bpmn"
MODELS = list(work_kind_ids())
ROLES = {"implementer", "dept_reviewer", "pm", "auditor"}
FORMS = {
    "intake", "difficulty_confirmation", "survey_sorting", "review", "design", "build_integration", "tests",
    "walkthrough", "go_live", "cosign", "analysis", "plan", "licence_step", "guide_design", "entry",
    "publish", "intake_licence", "guide_list",
    "quality_check",  # added for the one-thing 办件质量校验 step
    "difficulty_review", "metered_record", "deliverable",  # issue 16: third-party steps, records, deliverables
    "monthly_report", "report_review",  # issue 17: the monthly operations report as a work item
}
STAGES = {
    "intake", "survey", "design", "build", "test", "walkthrough", "go_live", "confirmation", "analysis",
    "plan", "issuing", "showing", "using", "guide", "deliver", "review", "record", "confirm",
    "report", "report_review",
}
NS = {
    "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
    "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
    "dc": "http://www.omg.org/spec/DD/20100524/DC",
    "di": "http://www.omg.org/spec/DD/20100524/DI",
    "spiffworkflow": "http://spiffworkflow.org/bpmn/schema/1.0/core",
}
FLOW_NODES = {
    "startEvent", "endEvent", "userTask", "task", "manualTask", "scriptTask", "serviceTask", "subProcess",
    "exclusiveGateway", "parallelGateway", "inclusiveGateway", "intermediateCatchEvent",
    "intermediateThrowEvent", "boundaryEvent", "callActivity",
}
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")

BASE_DATA = {"mode": "new", "channels": ["pc", "mobile"], "service_line": "single_department",
             "department": "d_lead", "attributes": {"data_quality": True},
             # the engine sets it from the line's walkthrough rules (engine/usecases/tasks.py create_item)
             "needs_walkthrough": True,
             # set from the catalogue too: the third party confirms the difficulty when the contract declares
             # levels for the line; the paths below run without it, test_*_difficulty_review_* with it
             "needs_difficulty_review": False,
             # the engine starts every instance with this (engine/runtime/timers.py): deadline timers read it
             "due_at_iso": "9999-12-31T00:00:00+00:00"}


# --------------------------------------------------------------------------------------------- helpers


def load(pid: str):
    parser = SpiffBpmnParser(validator=VALIDATOR)  # XSD validation, spiffworkflow extensions included
    parser.add_bpmn_file(str(BPMN_DIR / f"{pid}.bpmn"))
    return parser.get_spec(pid), parser.get_subprocess_specs(pid)


def tree(pid: str):
    return etree.parse(str(BPMN_DIR / f"{pid}.bpmn"))


def local(el) -> str:
    return etree.QName(el).localname


class Run:
    """Drives a workflow the way the engine does: complete READY manual tasks, then run engine steps."""

    def __init__(self, pid: str, **data: Any):
        spec, subprocesses = load(pid)
        self.wf = BpmnWorkflow(spec, subprocesses, script_engine=PythonScriptEngine())
        start = self.wf.get_tasks(state=TaskState.READY)
        assert [t.task_spec.name for t in start] == ["Start"]
        start[0].data.update({**BASE_DATA, **data})
        self.wf.do_engine_steps()
        self.visited: list[str] = []
        self.lanes: dict[str, str] = {}
        self.ids: set = set()

    def ready(self):
        return self.wf.get_tasks(state=TaskState.READY, manual=True)

    def ready_names(self) -> list[str]:
        return sorted(t.task_spec.name for t in self.ready())

    def complete(self, name: str, dept: str | None = None, **data: Any):
        matches = [t for t in self.ready() if t.task_spec.name == name
                   and (dept is None or t.data.get("dept") == dept)]
        assert matches, f"{name} ({dept}) not ready; ready: {self.ready_names()}"
        task = matches[0]
        assert task.id not in self.ids, "a task id was reused"
        self.ids.add(task.id)
        # As the engine does (one adapter): a parallel decider's decision under its own name.
        task.data.update(spiff.step_data(self.wf, task, data))
        task.run()
        self.wf.do_engine_steps()
        self.visited.append(name)
        self.lanes[name] = task.task_spec.lane
        return task

    def approve(self, name: str, dept: str | None = None):
        return self.complete(name, dept, decision="approve", comment="")

    def send_back(self, name: str, dept: str | None = None):
        return self.complete(name, dept, decision="return", comment="请补充材料")


def reserialize(run: Run) -> None:
    """Round-trip through the serializer the engine uses (subprocess/multi-instance state included)."""
    serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
    data = serializer.serialize_json(run.wf)
    run.wf = serializer.deserialize_json(data)
    run.wf.script_engine = PythonScriptEngine()


# --------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("pid", MODELS)
def test_model_parses_and_user_tasks_carry_lane_form_stage(pid):
    spec, subprocesses = load(pid)
    specs = [spec, *subprocesses.values()]
    user_tasks = [ts for s in specs for ts in s.task_specs.values() if type(ts).__name__ == "UserTask"]
    assert user_tasks
    for ts in user_tasks:
        props = ts.extensions.get("properties", {})
        assert ts.lane in ROLES, ts.name
        assert props.get("form") in FORMS, ts.name
        assert props.get("stage") in STAGES, ts.name
        assert SNAKE.match(ts.name), ts.name
        if "gate" in props:
            assert SNAKE.match(props["gate"]), ts.name
        if "review_of" in props:
            assert props["form"] == "review" and SNAKE.match(props["review_of"]), ts.name
        if props.get("form") == "review":
            # the department reviews deliverables; the third party confirms a metered record
            assert ts.lane == ("auditor" if pid == "metered_record" else "dept_reviewer"), ts.name
        if "due_days" in props:
            assert int(props["due_days"]) > 0, ts.name
        assert set(props) <= TASK_PROPERTIES, ts.name


@pytest.mark.parametrize("pid", MODELS)
def test_lanes_are_roles_and_every_user_task_sits_in_one_lane(pid):
    doc = tree(pid)
    process = doc.find(f".//bpmn:process[@id='{pid}']", NS)
    lanes = process.findall("bpmn:laneSet/bpmn:lane", NS)
    assert lanes and {lane.get("name") for lane in lanes} <= ROLES
    refs: dict[str, int] = {}
    for lane in lanes:
        for ref in lane.findall("bpmn:flowNodeRef", NS):
            refs[ref.text] = refs.get(ref.text, 0) + 1
    for task in process.iter(f"{{{NS['bpmn']}}}userTask"):
        assert refs.get(task.get("id")) == 1, task.get("id")
    # SpiffWorkflow gives every node of a subprocess the subprocess's lane when it has one, so the
    # subprocesses stay out of lanes and their inner tasks name their own.
    for sub in process.iter(f"{{{NS['bpmn']}}}subProcess"):
        assert sub.get("id") not in refs


class _TinyLanguage(ast.NodeVisitor):
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Eq,
               ast.NotEq, ast.In, ast.NotIn, ast.Name, ast.Load, ast.Constant, ast.Call)

    def generic_visit(self, node):
        assert isinstance(node, self.allowed), f"{type(node).__name__} outside the condition language"
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id == "len" and len(node.args) == 1
            assert not node.keywords
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, str | int | float)
        super().generic_visit(node)


@pytest.mark.parametrize("pid", MODELS)
def test_gateways_have_conditions_in_the_tiny_language(pid):
    doc = tree(pid)
    flows = doc.findall(".//bpmn:sequenceFlow", NS)
    assert not doc.findall(".//bpmn:scriptTask", NS)
    by_source: dict[str, list] = {}
    for f in flows:
        by_source.setdefault(f.get("sourceRef"), []).append(f)
    for gw in doc.iter(f"{{{NS['bpmn']}}}exclusiveGateway", f"{{{NS['bpmn']}}}inclusiveGateway"):
        outgoing = by_source.get(gw.get("id"), [])
        if len(outgoing) < 2:
            continue  # a merging gateway: one unconditional way on
        for f in outgoing:
            cond = f.find("bpmn:conditionExpression", NS)
            assert cond is not None and cond.text, f.get("id")
            _TinyLanguage().visit(ast.parse(cond.text.strip(), mode="eval"))


@pytest.mark.parametrize("pid", MODELS)
def test_every_element_has_di_and_shapes_do_not_overlap(pid):
    doc = tree(pid)
    process = doc.find(f".//bpmn:process[@id='{pid}']", NS)
    shapes = {}
    for sh in doc.iterfind(".//bpmndi:BPMNShape", NS):
        b = sh.find("dc:Bounds", NS)
        shapes[sh.get("bpmnElement")] = tuple(float(b.get(k)) for k in ("x", "y", "width", "height"))
    edges = {e.get("bpmnElement"): e.findall("di:waypoint", NS)
             for e in doc.iterfind(".//bpmndi:BPMNEdge", NS)}

    participant = doc.find(f".//bpmn:participant[@processRef='{pid}']", NS)
    assert participant is not None and participant.get("id") in shapes
    nodes, parents = [], {}
    for el in process.iter():
        if not isinstance(el.tag, str):
            continue
        name = local(el)
        if name == "lane":
            assert el.get("id") in shapes
        elif name == "sequenceFlow":
            assert len(edges.get(el.get("id"), [])) >= 2, el.get("id")
        elif name in FLOW_NODES:
            assert el.get("id") in shapes, el.get("id")
            nodes.append(el.get("id"))
            parent = el.getparent()
            parents[el.get("id")] = parent.get("id") if local(parent) == "subProcess" else None
        if name in FLOW_NODES or name == "sequenceFlow":
            assert SNAKE.match(el.get("id")), el.get("id")

    def ancestors(n):
        while parents.get(n):
            n = parents[n]
            yield n

    def overlap(a, b):
        ax, ay, aw, ah = a
        bx, by, bw, bh = b
        return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah

    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if a in ancestors(b) or b in ancestors(a):
                continue
            assert not overlap(shapes[a], shapes[b]), (a, b)
    # every lane member is drawn inside its lane, and lanes stack horizontally without overlapping
    lanes = process.findall("bpmn:laneSet/bpmn:lane", NS)
    for lane in lanes:
        lx, ly, lw, lh = shapes[lane.get("id")]
        assert lw > lh
        for ref in lane.findall("bpmn:flowNodeRef", NS):
            x, y, w, h = shapes[ref.text]
            assert lx <= x and x + w <= lx + lw and ly <= y and y + h <= ly + lh, ref.text
    for i, a in enumerate(lanes):
        for b in lanes[i + 1:]:
            assert not overlap(shapes[a.get("id")], shapes[b.get("id")])


@pytest.mark.parametrize("pid", MODELS)
def test_names_are_chinese(pid):
    doc = tree(pid)
    for task in doc.iterfind(".//bpmn:userTask", NS):
        assert re.search(r"[\u4e00-\u9fff]", task.get("name", "")), task.get("id")


# --------------------------------------------------------------------------------------------- service item

SERVICE_HEAD = ["intake", "confirm_difficulty", "survey_sorting", "confirm_survey"]


def test_service_item_new_with_a_return_visits_walkthrough():
    run = Run("service_item", mode="new")
    run.complete("intake")
    run.complete("confirm_difficulty", difficulty=1.2)
    first = run.complete("survey_sorting")
    run.send_back("confirm_survey")
    assert run.ready_names() == ["survey_sorting"]
    again = run.ready()[0]
    assert again.id != first.id and first.state == TaskState.COMPLETED  # a new task instance, old one kept
    assert again.data["decision"] == "return"  # the reviewer's data flows back into the rework task
    run.complete("survey_sorting")
    run.approve("confirm_survey")
    run.complete("design")
    reserialize(run)
    run.approve("confirm_design")
    for name in ["build_integration", "tests", "walkthrough", "go_live"]:
        assert run.ready_names() == [name]
        run.complete(name)
    assert run.ready_names() == ["cosign_department", "cosign_implementer"]
    run.complete("cosign_implementer", confirm=True)
    assert not run.wf.is_completed()
    run.complete("cosign_department", confirm=True)
    assert run.wf.is_completed()
    assert run.visited == [
        "intake", "confirm_difficulty", "survey_sorting", "confirm_survey",
        "survey_sorting", "confirm_survey", "design", "confirm_design", "build_integration", "tests",
        "walkthrough", "go_live",
        "cosign_implementer", "cosign_department",
    ]
    assert run.lanes == {
        "intake": "implementer", "confirm_difficulty": "pm", "survey_sorting": "implementer",
        "confirm_survey": "dept_reviewer", "design": "implementer", "confirm_design": "dept_reviewer",
        "build_integration": "implementer", "tests": "implementer", "walkthrough": "implementer",
        "go_live": "implementer", "cosign_implementer": "implementer", "cosign_department": "dept_reviewer",
    }


def test_service_item_iteration_skips_walkthrough_and_design_can_return():
    run = Run("service_item", mode="iteration", needs_walkthrough=False)
    for name in ["intake", "confirm_difficulty", "survey_sorting"]:
        run.complete(name)
    run.approve("confirm_survey")
    run.complete("design")
    run.send_back("confirm_design")
    assert run.ready_names() == ["design"]
    run.complete("design")
    run.approve("confirm_design")
    run.complete("build_integration")
    run.complete("tests")
    assert run.ready_names() == ["go_live"]
    run.complete("go_live")
    run.complete("cosign_department")
    run.complete("cosign_implementer")
    assert run.wf.is_completed()
    assert "walkthrough" not in run.visited
    assert run.visited[-4:] == ["tests", "go_live", "cosign_department", "cosign_implementer"]


def test_service_item_difficulty_review_runs_beside_the_work_and_holds_the_end():
    """Issue 16 point 3: the third party confirms the difficulty in a branch of its own; the item ends (and is
    tallied) only when the work and the confirmation are both done. The work's task order is unchanged."""
    run = Run("service_item", mode="iteration", needs_walkthrough=False, needs_difficulty_review=True)
    run.complete("intake")
    run.complete("confirm_difficulty")
    assert run.ready_names() == ["review_difficulty", "survey_sorting"]
    assert {t.task_spec.name: t.task_spec.lane for t in run.ready()}["review_difficulty"] == "auditor"
    run.complete("survey_sorting")
    run.approve("confirm_survey")
    run.complete("design")
    reserialize(run)
    run.approve("confirm_design")
    for name in ["build_integration", "tests", "go_live"]:
        run.complete(name)
    run.complete("cosign_department")
    run.complete("cosign_implementer")
    assert not run.wf.is_completed()
    assert run.ready_names() == ["review_difficulty"]
    run.complete("review_difficulty", verdict="confirm")
    assert run.wf.is_completed()
    work = [n for n in run.visited if n != "review_difficulty"]
    assert work == ["intake", "confirm_difficulty", "survey_sorting", "confirm_survey", "design", "confirm_design",
                    "build_integration", "tests", "go_live", "cosign_department", "cosign_implementer"]


@pytest.mark.parametrize("pid", ["one_thing", "e_licence"])
def test_difficulty_review_confirmed_early_waits_for_the_work(pid):
    run = Run(pid, departments=[], parts=[], needs_difficulty_review=True)
    run.complete("intake")
    run.complete("confirm_difficulty")
    assert "review_difficulty" in run.ready_names()
    run.complete("review_difficulty", verdict="confirm")
    assert "review_difficulty" not in run.ready_names() and run.ready_names()
    while run.ready():
        name = run.ready_names()[0]
        run.complete(name, decision="approve", comment="", confirm=True)
    assert run.wf.is_completed() and run.visited.count("review_difficulty") == 1


# --------------------------------------------------------------------------------------------- one-thing


def test_one_thing_runs_linked_item_analysis_per_department():
    departments = ["d_lead", "d_two", "d_three"]
    run = Run("one_thing", service_line="one_thing", departments=departments)
    run.complete("intake")
    run.complete("confirm_difficulty")
    run.complete("survey_current")
    ready = run.ready()
    assert sorted(t.data["dept"] for t in ready) == sorted(departments)  # parallel instances
    assert {t.task_spec.name for t in ready} == {"analyse_linked_item"}
    assert {t.task_spec.extensions["properties"]["department_var"] for t in ready} == {"dept"}
    for dept in departments:
        run.complete("analyse_linked_item", dept)
    assert sorted(t.data["dept"] for t in run.ready()) == sorted(departments)
    assert run.ready_names() == ["confirm_linked_item"] * 3
    reserialize(run)
    run.approve("confirm_linked_item", "d_lead")
    run.send_back("confirm_linked_item", "d_two")
    # only the returned department reworks; the others wait, and the plan waits for all of them
    assert sorted((t.task_spec.name, t.data["dept"]) for t in run.ready()) == [
        ("analyse_linked_item", "d_two"), ("confirm_linked_item", "d_three")]
    run.approve("confirm_linked_item", "d_three")
    assert run.ready_names() == ["analyse_linked_item"]
    run.complete("analyse_linked_item", "d_two")
    run.approve("confirm_linked_item", "d_two")
    assert run.ready_names() == ["business_technical_plan"]
    run.complete("business_technical_plan")
    run.send_back("confirm_plan")
    run.complete("business_technical_plan")
    run.approve("confirm_plan")
    for name in ["build_integration", "quality_check", "tests", "walkthrough", "go_live"]:
        assert run.ready_names() == [name]
        run.complete(name)
    run.complete("cosign_department")
    run.complete("cosign_implementer")
    assert run.wf.is_completed()
    assert run.visited == [
        "intake", "confirm_difficulty", "survey_current", *["analyse_linked_item"] * 3,
        "confirm_linked_item", "confirm_linked_item", "confirm_linked_item",
        "analyse_linked_item", "confirm_linked_item",
        "business_technical_plan", "confirm_plan", "business_technical_plan", "confirm_plan",
        "build_integration", "quality_check", "tests", "walkthrough", "go_live",
        "cosign_department", "cosign_implementer",
    ]
    assert run.lanes["analyse_linked_item"] == "implementer"
    assert run.lanes["confirm_linked_item"] == "dept_reviewer"
    assert run.lanes["confirm_plan"] == "dept_reviewer"


def test_one_thing_without_linked_departments_goes_straight_to_the_plan():
    run = Run("one_thing", departments=[])
    for name in ["intake", "confirm_difficulty", "survey_current"]:
        run.complete(name)
    assert run.ready_names() == ["business_technical_plan"]


# --------------------------------------------------------------------------------------------- e-licence

ISSUING = ["collect_info", "confirm_info", "customise_template", "configure_parameters", "template_check",
           "issuing_test", "issuing_publish"]


def _issue(run: Run, returns: bool = False) -> None:
    run.complete("intake")
    run.complete("confirm_difficulty")
    run.complete("collect_info")
    if returns:
        run.send_back("confirm_info")
        run.complete("collect_info")
    run.approve("confirm_info")
    run.complete("customise_template")
    run.complete("configure_parameters")
    if returns:
        run.send_back("template_check")
        assert run.ready_names() == ["customise_template"]
        run.complete("customise_template")
        run.complete("configure_parameters")
    run.approve("template_check")
    run.complete("issuing_test")
    run.complete("issuing_publish")


def test_e_licence_with_showing_and_using_runs_both_parts_side_by_side():
    run = Run("e_licence", service_line="e_licence", parts=["showing", "using"])
    _issue(run, returns=True)
    assert run.ready_names() == ["showing_design", "using_design"]
    reserialize(run)
    for name in ["using_design", "using_test", "using_go_live"]:
        run.complete(name)
    assert run.ready_names() == ["showing_design"]  # the join waits for the other part
    run.complete("showing_design")
    run.complete("showing_test")
    assert run.ready_names() == ["showing_go_live"]
    run.complete("showing_go_live")
    assert run.ready_names() == ["security_test"]
    run.complete("security_test")
    run.complete("cosign_department")
    run.complete("cosign_implementer")
    assert run.wf.is_completed()
    assert run.visited[:2] == ["intake", "confirm_difficulty"]
    assert [n for n in run.visited if n.startswith(("showing", "using"))] == [
        "using_design", "using_test", "using_go_live", "showing_design", "showing_test", "showing_go_live"]
    assert run.lanes["template_check"] == "dept_reviewer" and run.lanes["confirm_info"] == "dept_reviewer"
    assert run.lanes["confirm_difficulty"] == "pm"
    assert all(run.lanes[n] == "implementer" for n in run.lanes if n.startswith(("showing", "using")))


@pytest.mark.parametrize("parts", [[], ["showing"], ["using"]])
def test_e_licence_runs_only_the_chosen_parts(parts):
    run = Run("e_licence", parts=parts)
    _issue(run)
    for part in parts:
        for step in ["design", "test", "go_live"]:
            run.complete(f"{part}_{step}")
    assert run.ready_names() == ["security_test"]
    run.complete("security_test")
    run.complete("cosign_implementer")
    run.complete("cosign_department")
    assert run.wf.is_completed()
    expected = ["intake", "confirm_difficulty", *ISSUING]
    expected += [f"{p}_{s}" for p in parts for s in ["design", "test", "go_live"]]
    assert run.visited == [*expected, "security_test", "cosign_implementer", "cosign_department"]


# --------------------------------------------------------------------------------------------- scenario guide


def test_scenario_guide_design_returned_twice():
    run = Run("scenario_guide", service_line="scenario_guide")
    run.complete("guide_list")
    run.send_back("confirm_guide_list")
    run.complete("guide_list")
    run.approve("confirm_guide_list")
    design_ids = []
    for _ in range(2):
        design_ids.append(run.complete("guide_design").id)
        run.send_back("review_guide_design")
    design_ids.append(run.complete("guide_design").id)
    assert len(set(design_ids)) == 3
    run.approve("review_guide_design")
    for name in ["entry", "tests", "go_live"]:
        assert run.ready_names() == [name]
        run.complete(name)
    assert run.wf.is_completed()
    assert run.visited == [
        "guide_list", "confirm_guide_list", "guide_list", "confirm_guide_list",
        "guide_design", "review_guide_design", "guide_design", "review_guide_design",
        "guide_design", "review_guide_design", "entry", "tests", "go_live",
    ]
    assert run.lanes == {
        "guide_list": "implementer", "confirm_guide_list": "dept_reviewer", "guide_design": "implementer",
        "review_guide_design": "dept_reviewer", "entry": "implementer", "tests": "implementer",
        "go_live": "implementer",
    }


def test_e_licence_parts_chosen_at_intake_override_the_start_data():
    run = Run("e_licence", parts=[])
    run.complete("intake", parts=["using"])  # the intake_licence form chooses the parts
    for name in ["confirm_difficulty", *ISSUING]:
        run.complete(name, decision="approve", comment="")
    assert run.ready_names() == ["using_design"]
