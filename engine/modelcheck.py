"""Checks on a BPMN model before it may run: forms, lanes, gates, expressions — errors name the element id."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

import forms
from engine.expressions import ExpressionProblem, check_expression, check_script
from engine.policy import lane_roles

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}
# Lanes name the role that acts; only roles that work on items may own a lane (the third-party auditor
# confirms metered records and difficulty coefficients).
LANE_ROLES = lane_roles()
_MODE_CONDITION = re.compile(r'^\s*mode\s*(==|!=)\s*["\']([a-z_]+)["\']\s*$')
TASK_PROPERTIES = frozenset({"form", "gate", "stage", "due_days", "review_of", "department_var"})


@dataclass(frozen=True)
class ModelProblem:
    element_id: str
    problem: str

    def __str__(self) -> str:
        return f"element '{self.element_id}': {self.problem}"


class ModelRejected(ValueError):
    """A model that must not be deployed; `problems` lists each element and what is wrong."""

    def __init__(self, filename: str, problems: list[ModelProblem]):
        self.filename = filename
        self.problems = problems
        super().__init__(f"{filename}: " + "; ".join(str(p) for p in problems))


def xml_tree(xml: str, filename: str) -> Any:
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise ModelRejected(filename, [ModelProblem("(document)", "DOCTYPE/ENTITY declarations are not allowed")])
    try:
        return etree.fromstring(xml.encode("utf-8"),
                                parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise ModelRejected(filename, [ModelProblem("(document)", f"not well-formed XML: {exc}")]) from exc


def properties_of(element: Any) -> dict[str, str]:
    """The spiffworkflow properties of a process or task element."""
    return {p.get("name"): p.get("value")
            for p in element.iterfind("bpmn:extensionElements/spiffworkflow:properties/spiffworkflow:property", NS)}


def _process(root: Any, process_id: str) -> Any:
    return root.find(f".//bpmn:process[@id='{process_id}']", NS)


def model_gate_codes(xml: str, process_id: str | None = None, filename: str = "model.bpmn") -> set[str]:
    """Every gate code a model's user tasks name (the catalogue must say what each requires)."""
    root = xml_tree(xml, filename)
    scope = _process(root, process_id) if process_id else root
    if scope is None:
        return set()
    return {props["gate"] for task in scope.iter(f"{{{BPMN_NS}}}userTask")
            if (props := properties_of(task)).get("gate")}


def mode_guarded_gates(xml: str, process_id: str | None = None, filename: str = "model.bpmn") -> dict[str, set[str]]:
    """Gated steps the model takes only for some modes (a flow conditioned on `mode == "new"` or
    `mode != "new"` leads to them): gate → the modes that reach the step."""
    from storage.models import MODES

    root = xml_tree(xml, filename)
    scope = _process(root, process_id) if process_id else root
    if scope is None:
        return {}
    gates = {task.get("id"): props["gate"] for task in scope.iter(f"{{{BPMN_NS}}}userTask")
             if (props := properties_of(task)).get("gate")}
    out: dict[str, set[str]] = {}
    for flow in scope.iter(f"{{{BPMN_NS}}}sequenceFlow"):
        gate = gates.get(flow.get("targetRef"))
        cond = flow.find("bpmn:conditionExpression", NS)
        if gate is None or cond is None or not cond.text:
            continue
        match = _MODE_CONDITION.match(cond.text)
        if match is None:
            continue
        op, mode = match.groups()
        reached = {mode} if op == "==" else set(MODES) - {mode}
        out[gate] = out.get(gate, set()) | reached
    return out


def process_ids(xml: str, filename: str = "model.bpmn") -> list[str]:
    root = xml_tree(xml, filename)
    return [p.get("id") for p in root.iterfind("bpmn:process", NS) if p.get("isExecutable") != "false"]


def _lanes_of(process: Any) -> dict[str, str]:
    """flow node id → lane name (nested lane sets are walked too)."""
    lanes: dict[str, str] = {}
    for lane in process.iter(f"{{{BPMN_NS}}}lane"):
        for ref in lane.iterfind("bpmn:flowNodeRef", NS):
            if ref.text:
                lanes[ref.text.strip()] = lane.get("name") or ""
    return lanes


def check_model(xml: str, process_id: str, filename: str,
                gate_rules: Iterable[tuple[str, Mapping[str, Any]]] = (),
                artefact_kinds: Iterable[str] = ()) -> list[ModelProblem]:
    """All problems of one model; `gate_rules` are (line label, gates) of every contract line running it."""
    root = xml_tree(xml, filename)
    process = _process(root, process_id)
    if process is None:
        found = [p.get("id") for p in root.iterfind("bpmn:process", NS)]
        return [ModelProblem(process_id, f"no executable process with this id (found {found})")]
    problems: list[ModelProblem] = []
    lanes = _lanes_of(process)
    for lane in process.iter(f"{{{BPMN_NS}}}lane"):
        if lane.get("name") not in LANE_ROLES:
            problems.append(ModelProblem(lane.get("id") or "?", f"lane name {lane.get('name')!r} is not a role "
                                                                f"({sorted(LANE_ROLES)})"))
    used_gates: dict[str, str] = {}
    process_props = properties_of(process)
    # A work kind names its stages for people: every stage its tasks enter needs a `stage.<key>` label.
    stage_labels = {k[len("stage."):] for k in process_props if k.startswith("stage.")} \
        if process_props.get("work_kind") == "true" else None
    for task in process.iter(f"{{{BPMN_NS}}}userTask"):
        tid = task.get("id") or "?"
        props = properties_of(task)
        unknown = set(props) - TASK_PROPERTIES
        if unknown:
            problems.append(ModelProblem(tid, f"unknown properties {sorted(unknown)}"))
        form = props.get("form")
        if not form:
            problems.append(ModelProblem(tid, "user task has no 'form' property"))
        elif form not in forms.FORMS:
            problems.append(ModelProblem(tid, f"unknown form {form!r}"))
        lane = lanes.get(tid)
        if lane is None:
            problems.append(ModelProblem(tid, "user task is in no lane"))
        elif lane not in LANE_ROLES:
            problems.append(ModelProblem(tid, f"lane {lane!r} is not a role"))
        due = props.get("due_days")
        if due is not None and (not due.isdigit() or int(due) <= 0):
            problems.append(ModelProblem(tid, f"due_days {due!r} must be a positive whole number"))
        if props.get("gate"):
            used_gates.setdefault(props["gate"], tid)
        if stage_labels is not None and props.get("stage") and props["stage"] not in stage_labels:
            problems.append(ModelProblem(tid, f"stage {props['stage']!r} has no label: add the process property "
                                              f"'stage.{props['stage']}'"))
    kinds = set(artefact_kinds)
    for label, gates in gate_rules:
        for gate, tid in sorted(used_gates.items()):
            if gate not in gates:
                problems.append(ModelProblem(tid, f"gate {gate!r} has no rules in {label} "
                                                  f"(declare it, empty if nothing is required)"))
                continue
            for rule in gates[gate]:
                if kinds and rule.get("kind") not in kinds:
                    problems.append(ModelProblem(tid, f"gate {gate!r} in {label} names unknown artefact kind "
                                                      f"{rule.get('kind')!r}"))
    problems.extend(_expression_problems(process))
    return problems


def _expression_problems(process: Any) -> list[ModelProblem]:
    """Every text the engine would evaluate must pass the restricted language's checks."""
    problems: list[ModelProblem] = []

    def check(element_id: str, text: str | None, what: str, script: bool = False) -> None:
        if text is None or not text.strip():
            return
        try:
            (check_script if script else check_expression)(text.strip(), element_id)
        except ExpressionProblem as exc:
            problems.append(ModelProblem(element_id, f"{what} {exc.expression.strip()[:120]!r} {exc.verb}: "
                                                     f"{exc.reason}"))

    for flow in process.iter(f"{{{BPMN_NS}}}sequenceFlow"):
        cond = flow.find("bpmn:conditionExpression", NS)
        if cond is not None:
            check(flow.get("id") or "?", cond.text, "condition")
    for script_task in process.iter(f"{{{BPMN_NS}}}scriptTask"):
        node = script_task.find("bpmn:script", NS)
        check(script_task.get("id") or "?", node.text if node is not None else None, "script", script=True)
    for tag in ("preScript", "postScript"):
        for node in process.iter(f"{{{SPIFF_NS}}}{tag}"):
            owner = node.getparent().getparent()
            check(owner.get("id") or "?", node.text, tag, script=True)
    for timer in process.iter(f"{{{BPMN_NS}}}timerEventDefinition"):
        event = timer.getparent()
        eid = event.get("id") or "?"
        for tag in ("timeDate", "timeDuration", "timeCycle"):
            node = timer.find(f"bpmn:{tag}", NS)
            if node is not None:
                check(eid, node.text, f"timer {tag}")
    for loop in process.iter(f"{{{BPMN_NS}}}completionCondition"):
        check(loop.getparent().getparent().get("id") or "?", loop.text, "completion condition")
    return problems
