"""Checks on a BPMN model before it may run: forms, lanes, gates, expressions — errors name the element id."""
from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

import forms
from engine.runtime.expressions import ExpressionProblem, check_expression, check_script
from engine.trust.policy import lane_roles

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
NS = {"bpmn": BPMN_NS, "spiffworkflow": SPIFF_NS}
# Lanes name the role that acts; only roles that work on items may own a lane (the third-party auditor
# confirms metered records and difficulty coefficients).
LANE_ROLES = lane_roles()
_MODE_CONDITION = re.compile(r'^\s*mode\s*(==|!=)\s*["\']([a-z_]+)["\']\s*$')
TASK_PROPERTIES = frozenset({"form", "gate", "stage", "due_days", "due_at_var", "review_of", "department_var",
                             "decision_var", "help", "help_en"})


@dataclass(frozen=True)
class ModelProblem:
    element_id: str
    problem: str
    zh: str | None = None  # the same, in Chinese, for the web (the API and CLI speak English)

    def __str__(self) -> str:
        return f"element '{self.element_id}': {self.problem}"

    def as_dict(self) -> dict[str, str]:
        return {"element": self.element_id, "problem": self.problem, "problem_zh": self.zh or self.problem}


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
    # Compared in Python, never spliced into an XPath: a process id is model text (it may hold a quote).
    return next((p for p in root.iter(f"{{{BPMN_NS}}}process") if p.get("id") == process_id), None)


# Task types the engine projects as human work (SpiffWorkflow's manual tasks): each is checked like a user task.
HUMAN_TASKS = ("userTask", "manualTask")


def _human_tasks(scope: Any) -> list[Any]:
    return [t for t in scope.iter() if isinstance(t.tag, str) and t.tag in {f"{{{BPMN_NS}}}{k}" for k in HUMAN_TASKS}]


def model_gate_codes(xml: str, process_id: str | None = None, filename: str = "model.bpmn") -> set[str]:
    """Every gate code a model's user tasks name (the catalogue must say what each requires)."""
    root = xml_tree(xml, filename)
    scope = _process(root, process_id) if process_id else root
    if scope is None:
        return set()
    return {props["gate"] for task in _human_tasks(scope) if (props := properties_of(task)).get("gate")}


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
                gate_rules: Iterable[tuple[str, Mapping[str, Any]]] | None = None,
                artefact_kinds: Iterable[str] = (),
                kinds_by_label: Mapping[str, Iterable[str]] | None = None) -> list[ModelProblem]:
    """All problems of one model; `gate_rules` are (line label, gates) of every contract line running it.

    A gate rule's kind must be one `artefact_kinds` names, or (16a) one `kinds_by_label[label]` names: the kinds
    the line's contract may carry (built-in plus its catalogue's declared [artefact_kinds])."""
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
                                                                f"({sorted(LANE_ROLES)})",
                                         f"泳道名称 {lane.get('name')!r} 不是角色（可用：{sorted(LANE_ROLES)}）"))
    used_gates: dict[str, str] = {}
    process_props = properties_of(process)
    # A work kind names its stages for people: every stage its tasks enter needs a `stage.<key>` label.
    stage_labels = {k[len("stage."):] for k in process_props if k.startswith("stage.")} \
        if process_props.get("work_kind") == "true" else None
    human = _human_tasks(process)
    for task in human:
        tid = task.get("id") or "?"
        kind = "manual task" if task.tag.endswith("manualTask") else "user task"
        props = properties_of(task)
        unknown = set(props) - TASK_PROPERTIES
        if unknown:
            problems.append(ModelProblem(tid, f"unknown properties {sorted(unknown)}",
                                         f"未知属性 {sorted(unknown)}，请删除"))
        form = props.get("form")
        if not form:
            problems.append(ModelProblem(tid, f"{kind} has no 'form' property",
                                         "人工任务缺少 form 属性（表单），请在属性中指定"))
        elif form not in forms.FORMS:
            problems.append(ModelProblem(tid, f"unknown form {form!r}", f"未知表单 {form!r}"))
        lane = lanes.get(tid)
        if lane is None:
            problems.append(ModelProblem(tid, f"{kind} is in no lane",
                                         "人工任务不在任何泳道中，请把它放进一个角色泳道"))
        elif lane not in LANE_ROLES:
            problems.append(ModelProblem(tid, f"lane {lane!r} is not a role", f"泳道 {lane!r} 不是角色"))
        due = props.get("due_days")
        if due is not None and (not due.isdigit() or int(due) <= 0):
            problems.append(ModelProblem(tid, f"due_days {due!r} must be a positive whole number",
                                         f"due_days {due!r} 必须是正整数"))
        if props.get("gate"):
            used_gates.setdefault(props["gate"], tid)
        if stage_labels is not None and props.get("stage") and props["stage"] not in stage_labels:
            problems.append(ModelProblem(tid, f"stage {props['stage']!r} has no label: add the process property "
                                              f"'stage.{props['stage']}'",
                                         f"阶段 {props['stage']!r} 没有名称：请添加流程属性 'stage.{props['stage']}'"))
    if not human:
        problems.append(ModelProblem(process_id, "the process has no user or manual task, so its items could never "
                                                 "move; add at least one human task",
                                     "流程中没有任何人工任务（userTask/manualTask），事项将无法推进；请至少添加一个人工任务"))
    kinds = set(artefact_kinds)
    # `gate_rules` None: the caller did not look the lines up (a check of the file alone). An empty list: no
    # contract line runs this process, so nothing declares its gates — refused, not "requires nothing".
    rules = list(gate_rules or ())
    if gate_rules is not None and not rules:
        for gate, tid in sorted(used_gates.items()):
            problems.append(ModelProblem(tid, f"gate {gate!r} is declared by no contract line (no line runs process "
                                              f"{process_id!r}); load a catalogue whose line runs it and declares "
                                              "the gate (empty if nothing is required)",
                                         f"关口 {gate!r} 没有任何合同服务类别声明"
                                         f"（没有服务类别使用流程 {process_id!r}）；"
                                         "请先导入声明该关口的服务目录（不需要材料时声明为空）"))
    for label, gates in rules:
        for gate, tid in sorted(used_gates.items()):
            if gate not in gates:
                problems.append(ModelProblem(tid, f"gate {gate!r} has no rules in {label} "
                                                  f"(declare it, empty if nothing is required)",
                                             f"关口 {gate!r} 在 {label} 中没有规则（请声明，不需要材料时声明为空）"))
                continue
            line_kinds = kinds | set((kinds_by_label or {}).get(label, ()))
            for rule in gates[gate]:
                if line_kinds and rule.get("kind") not in line_kinds:
                    problems.append(ModelProblem(tid, f"gate {gate!r} in {label} names unknown artefact kind "
                                                      f"{rule.get('kind')!r}",
                                                 f"关口 {gate!r} 在 {label} 中引用了未知材料类型 {rule.get('kind')!r}"))
    problems.extend(_expression_problems(process))
    problems.extend(_timer_problems(process, known_variables(process)))
    problems.extend(structure_problems(process))
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
                                                     f"{exc.reason}",
                                         f"{what} {exc.expression.strip()[:120]!r} 不被允许或无法运行：{exc.reason}"))

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


# --- timers ---------------------------------------------------------------------------------------------------

# Variables every instance starts with (engine.usecases.tasks.create_item) and the multi-instance/intake ones.
START_VARIABLES = frozenset({"mode", "channels", "service_line", "department", "attributes", "due_at_iso",
                             "departments", "parts"})


def known_variables(process: Any) -> set[str]:
    """Names the process sets: start data, the fields of every form it uses, script assignments, loop items."""
    import ast

    names = set(START_VARIABLES)
    for task in _human_tasks(process):
        form = properties_of(task).get("form")
        if form in forms.FORMS:
            names.update(forms.FORMS[form]().fields)
    scripts = [n.text for n in process.iter(f"{{{BPMN_NS}}}script")]
    scripts += [n.text for tag in ("preScript", "postScript") for n in process.iter(f"{{{SPIFF_NS}}}{tag}")]
    for text in scripts:
        try:
            tree = ast.parse(textwrap.dedent(text or "").strip())
        except (SyntaxError, ValueError, RecursionError):
            continue
        names.update(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    for item in process.iter(f"{{{BPMN_NS}}}inputDataItem", f"{{{BPMN_NS}}}outputDataItem"):
        names.update(v for v in (item.get("name"), item.get("id")) if v)
    return names


def _timer_problems(process: Any, variables: set[str]) -> list[ModelProblem]:
    """Constant timer values are parsed now, with SpiffWorkflow's parser; a bare name must be a variable the
    process sets (an unquoted P3D deploys as a variable name and strands every item at that step)."""
    import ast

    from engine.runtime.timerspec import TimerValueError, check_timer_value

    problems: list[ModelProblem] = []
    for timer in process.iter(f"{{{BPMN_NS}}}timerEventDefinition"):
        eid = timer.getparent().get("id") or "?"
        for kind in ("timeDate", "timeDuration", "timeCycle"):
            node = timer.find(f"bpmn:{kind}", NS)
            if node is None:
                continue
            text = (node.text or "").strip()
            if not text:
                problems.append(ModelProblem(eid, f"timer {kind} is empty", f"定时器 {kind} 为空"))
                continue
            try:
                tree = ast.parse(text, mode="eval").body
            except (SyntaxError, ValueError, RecursionError):
                continue  # reported by the expression check
            if isinstance(tree, ast.Constant) and isinstance(tree.value, str):
                try:
                    check_timer_value(kind, tree.value)
                except TimerValueError as exc:
                    problems.append(ModelProblem(eid, f"timer {kind}: {exc}", f"定时器 {kind} 的值无效：{exc}"))
            elif isinstance(tree, ast.Constant):
                problems.append(ModelProblem(eid, f"timer {kind} {text!r} is not text; write an ISO 8601 value "
                                                  "in quotes, e.g. \"P3D\"",
                                             f"定时器 {kind} {text!r} 不是文本；请用引号写 ISO 8601 值，如 \"P3D\""))
            elif isinstance(tree, ast.Name) and tree.id not in variables:
                problems.append(ModelProblem(
                    eid, f"timer {kind} {text!r} is a bare name but no variable the process sets; a constant must "
                         f"be quoted (\"{text}\"), or name a form field or script variable",
                    f"定时器 {kind} {text!r} 是一个未定义的变量名；常量请加引号（\"{text}\"），"
                    "或使用表单字段、脚本变量"))
    return problems


# --- structure ------------------------------------------------------------------------------------------------

_FLOW_NODES = frozenset({"startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent",
                         "boundaryEvent", "task", "userTask", "manualTask", "scriptTask", "serviceTask",
                         "sendTask", "receiveTask", "businessRuleTask", "callActivity", "subProcess",
                         "exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway",
                         "complexGateway", "transaction"})


def _local(tag: Any) -> str:
    return tag.split("}", 1)[1] if isinstance(tag, str) and "}" in tag else str(tag)


def structure_problems(process: Any) -> list[ModelProblem]:
    """Every element reachable from a start event, an end reachable from every element (per process and per
    subprocess); an exclusive gateway whose conditions can all be false has a default flow."""
    problems: list[ModelProblem] = []
    scopes = [process, *[e for e in process.iter(f"{{{BPMN_NS}}}subProcess", f"{{{BPMN_NS}}}transaction")]]
    for scope in scopes:
        problems.extend(_scope_problems(scope))
    problems.extend(_gateway_default_problems(process))
    return problems


def _scope_problems(scope: Any) -> list[ModelProblem]:
    nodes = {e.get("id"): e for e in scope if _local(e.tag) in _FLOW_NODES and e.get("id")}
    succ: dict[str, set[str]] = {n: set() for n in nodes}
    pred: dict[str, set[str]] = {n: set() for n in nodes}
    for flow in scope.iterfind("bpmn:sequenceFlow", NS):
        src, dst = flow.get("sourceRef"), flow.get("targetRef")
        if src in nodes and dst in nodes:
            succ[src].add(dst)
            pred[dst].add(src)
    for nid, node in nodes.items():
        if _local(node.tag) == "boundaryEvent" and node.get("attachedToRef") in nodes:
            succ[node.get("attachedToRef")].add(nid)
            pred[nid].add(node.get("attachedToRef"))
    starts = [n for n, e in nodes.items() if _local(e.tag) == "startEvent"]
    problems: list[ModelProblem] = []
    if not nodes:
        return problems
    if not starts:
        sid = scope.get("id") or "?"
        return [ModelProblem(sid, "has no start event", "缺少开始事件")]
    # A node without outgoing flows ends its path: fine for end events and for boundary events (a
    # non-interrupting reminder just completes); anything else would leave a token nowhere to go.
    ends = {n for n, e in nodes.items() if _local(e.tag) in ("endEvent", "boundaryEvent") and not succ[n]}
    reached = _closure(starts, succ)
    for nid in sorted(set(nodes) - reached):
        problems.append(ModelProblem(nid, "is not reachable from the start event; connect it or remove it",
                                     "从开始事件无法到达该元素；请连接或删除它"))
    finishing = _closure(sorted(ends), pred)
    for nid in sorted(reached - finishing):
        tag = _local(nodes[nid].tag)
        what = "has no outgoing sequence flow" if not succ[nid] and tag != "endEvent" else \
            "can never reach an end event"
        problems.append(ModelProblem(nid, f"{what}; every path must be able to end (add a flow towards an end event)",
                                     "该元素之后无法到达结束事件；每条路径都必须能结束（请添加通向结束事件的连线）"))
    return problems


def _closure(starts: Iterable[str], edges: Mapping[str, set[str]]) -> set[str]:
    seen = set(starts)
    todo = list(seen)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def variable_domains(process: Any) -> dict[str, list[Any]]:
    """Values a variable can take, where the model says (form choices, booleans, the item's mode)."""
    from marshmallow import fields as mfields
    from marshmallow import validate as mvalidate

    from storage.models import MODES

    domains: dict[str, list[Any]] = {"mode": list(MODES)}
    for task in _human_tasks(process):
        form = properties_of(task).get("form")
        if form not in forms.FORMS:
            continue
        for name, field in forms.FORMS[form]().fields.items():
            if isinstance(field, mfields.Boolean):
                domains[name] = [True] if any(isinstance(v, mvalidate.Equal) for v in field.validators) \
                    else [True, False]
                continue
            choices = next((list(v.choices) for v in field.validators if isinstance(v, mvalidate.OneOf)), None)
            if choices is not None:
                domains[name] = sorted(set(domains.get(name, [])) | set(choices), key=str)
            elif isinstance(field, mfields.List):
                inner = next((list(v.choices) for v in field.inner.validators if isinstance(v, mvalidate.OneOf)),
                             None)
                if inner is not None and len(inner) <= 6:
                    from itertools import combinations

                    domains[name] = [list(c) for r in range(len(inner) + 1) for c in combinations(inner, r)]
    return domains


def _gateway_default_problems(process: Any) -> list[ModelProblem]:
    import ast
    from itertools import product

    from engine.runtime.expressions import ExpressionProblem, evaluate

    domains = variable_domains(process)
    flows = {f.get("id"): f for f in process.iter(f"{{{BPMN_NS}}}sequenceFlow")}
    problems: list[ModelProblem] = []
    for gateway in process.iter(f"{{{BPMN_NS}}}exclusiveGateway"):
        gid = gateway.get("id") or "?"
        outgoing = [f for f in flows.values() if f.get("sourceRef") == gid]
        if len(outgoing) < 2 or gateway.get("default"):
            continue
        conditions: list[str] = []
        for flow in outgoing:
            cond = flow.find("bpmn:conditionExpression", NS)
            if cond is None or not (cond.text or "").strip():
                conditions = []
                break  # SpiffWorkflow's parser reports the flow without a condition
            conditions.append(cond.text.strip())
        if not conditions:
            continue
        names: set[str] = set()
        for text in conditions:
            try:
                names.update(n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name))
            except (SyntaxError, ValueError, RecursionError):
                names.add("\0")
        if not names or any(n not in domains for n in names):
            continue  # not decidable from the model alone: the deploy-time simulation runs it
        ordered = sorted(names)
        for values in product(*(domains[n] for n in ordered)):
            data = dict(zip(ordered, values, strict=True))
            outcomes = []
            for text in conditions:
                try:
                    outcomes.append(bool(evaluate(text, data)))
                except ExpressionProblem:
                    outcomes.append(False)
            if not any(outcomes):
                shown = ", ".join(f"{k}={v!r}" for k, v in data.items())
                problems.append(ModelProblem(
                    gid, f"when {shown} none of its outgoing conditions is true and it has no default flow; add a "
                         "default flow or a condition for that case",
                    f"当 {shown} 时，该排他网关没有任何条件成立且没有默认流；请添加默认流或补充该情况的条件"))
                break
    return problems
