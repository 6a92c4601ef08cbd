"""Deploy-time simulation: run a model once along every path with sample form data, in memory, no database."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from itertools import combinations, product
from typing import Any

from marshmallow import fields as mfields
from marshmallow import validate as mvalidate
from SpiffWorkflow.util.task import TaskState

import forms
from engine.runtime import spiff, timers
from engine.runtime.expressions import deadline
from engine.runtime.modelcheck import ModelProblem
from engine.runtime.timerspec import timer_kind

log = logging.getLogger("itemgate.simulation")

# Enough for every branch of the shipped models several times over; a model with more paths than this is
# explored up to the caps (the paths tried first are the plain ones) and the rest is left to the checks.
MAX_COMPLETIONS = 600
MAX_PATH_STEPS = 80
MAX_SECONDS = 20.0
MODES = ("new", "iteration")


@dataclass
class _Path:
    state: str
    steps: list[str]
    choices: dict[str, set[str]] = field(default_factory=dict)


def _field_options(name: str, fld: Any) -> list[Any]:
    """Sample values for one form field; more than one where the value can steer the process."""
    choices = next((list(v.choices) for v in fld.validators if isinstance(v, mvalidate.OneOf)), None)
    if choices:
        return choices
    if isinstance(fld, mfields.Boolean):
        return [True] if any(isinstance(v, mvalidate.Equal) for v in fld.validators) else [True, False]
    if isinstance(fld, mfields.List):
        inner = next((list(v.choices) for v in fld.inner.validators if isinstance(v, mvalidate.OneOf)), None)
        if inner and len(inner) <= 4:
            return [list(c) for r in range(len(inner) + 1) for c in combinations(inner, r)]
        return [[]]
    if isinstance(fld, mfields.Integer | mfields.Float | mfields.Decimal):
        low = next((v.min for v in fld.validators if isinstance(v, mvalidate.Range) and v.min is not None), 1)
        return [str(low) if isinstance(fld, mfields.Decimal) else low]
    if isinstance(fld, mfields.Date):
        return [date(2026, 1, 5).isoformat()]
    if isinstance(fld, mfields.Url):
        return ["https://example.gov.cn/"]
    return ["模拟填写"]


def sample_forms(form_key: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, clean data) for each combination of the form's steering values that the form accepts."""
    if form_key not in forms.FORMS:
        return [("", {})]
    schema = forms.FORMS[form_key]()
    names = list(schema.fields)
    options = [_field_options(n, schema.fields[n]) for n in names]
    samples: list[tuple[str, dict[str, Any]]] = []
    for values in product(*options):
        data = dict(zip(names, values, strict=True))
        clean, errors = forms.load_form(form_key, data)
        if errors:
            continue
        label = ", ".join(f"{n}={v}" for n, v, opts in zip(names, values, options, strict=True) if len(opts) > 1)
        samples.append((label, clean))
        if len(samples) >= 16:
            break
    return samples or [("", {})]


def _step_name(task: Any) -> str:
    return str(getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name)


def _element(exc: BaseException, fallback: str) -> str:
    if getattr(exc, "element", None):
        return str(exc.element)  # type: ignore[attr-defined]
    task = getattr(exc, "task", None)
    spec = getattr(task, "task_spec", None)
    return str(getattr(spec, "bpmn_id", None) or getattr(spec, "name", None) or fallback)


def _waits_on_timer(workflow: Any) -> bool:
    """Waiting only for an intermediate timer (not a task's reminder): the path goes on when it fires."""
    for task in workflow.get_tasks(state=TaskState.WAITING):
        if timer_kind(task.task_spec) and type(task.parent.task_spec).__name__.find("BoundaryEventSplit") < 0:
            return True
    return False


def simulate(model: spiff.ParsedModel, xml: str) -> list[ModelProblem]:
    """Problems found running the model: a path that fails (script, condition, timer), stores more state than
    allowed, or stops without an end."""
    from engine.usecases.tasks import serialize_state  # late: engine.usecases.tasks is the use-case layer above

    started = time.monotonic()
    multi = "multiInstanceLoopCharacteristics" in xml
    variants = [(mode, depts) for mode in MODES for depts in ((["SIM1"], ["SIM1", "SIM2"]) if multi else (["SIM1"],))]
    problems: dict[str, ModelProblem] = {}
    completions = 0
    tried: set[tuple[str, str]] = set()
    with deadline(MAX_SECONDS):
        for mode, departments in variants:
            start = {"mode": mode, "channels": ["pc"], "service_line": "SIM", "department": "SIM1",
                     "attributes": {}, "departments": departments, timers.DUE_VARIABLE: timers.NO_DEADLINE,
                     # set by the engine from the line's walkthrough rules; both branches are tried across modes
                     "needs_walkthrough": mode == "new",
                     # set by the engine when the line declares difficulty levels; both branches tried likewise
                     "needs_difficulty_review": mode == "new"}
            label = f"mode={mode}" + (f", {len(departments)} department(s)" if multi else "")
            try:
                workflow = spiff.new_workflow(model, start)
            except Exception as exc:  # noqa: BLE001 — any failure is the model's, reported with the element
                element = _element(exc, model.process_id)
                problems.setdefault(element, _failure(element, [f"start ({label})"], exc))
                continue
            try:
                first = serialize_state(workflow, model)
            except Exception as exc:  # noqa: BLE001
                element = _element(exc, model.process_id)
                problems.setdefault(element, _failure(element, [f"start ({label})"], exc))
                continue
            stack = [_Path(first, [f"start ({label})"])]
            while stack:
                if completions >= MAX_COMPLETIONS or time.monotonic() - started > MAX_SECONDS:
                    log.info("simulation of %s stopped at its caps after %d steps", model.process_id, completions)
                    return list(problems.values())
                path = stack.pop()
                workflow = spiff.loads(path.state, model)
                if workflow.is_completed():
                    continue
                ready = sorted(spiff.ready_human_tasks(workflow), key=_step_name)
                if not ready:
                    if not _waits_on_timer(workflow):
                        where = path.steps[-1].split(" ", 1)[0].split("[", 1)[0]
                        problems.setdefault(f"dead:{where}", ModelProblem(
                            where, "a path stops with no open task and never reaches an end: "
                                   + " → ".join(path.steps),
                            "有一条路径停在没有待办任务且无法结束的状态：" + " → ".join(path.steps)))
                    continue
                if len(path.steps) > MAX_PATH_STEPS:
                    where = _step_name(ready[0])
                    problems.setdefault(f"long:{where}", ModelProblem(
                        where, f"a path runs more than {MAX_PATH_STEPS} steps without reaching an end (a loop "
                               "every answer keeps taking?): " + " → ".join(path.steps[-12:]),
                        f"有一条路径超过 {MAX_PATH_STEPS} 步仍未结束（是否存在无法退出的循环？）"))
                    continue
                task = ready[0]
                name = _step_name(task)
                form = spiff.task_properties(task).get("form", "")
                samples = sample_forms(form)
                used = path.choices.get(name, set())
                fresh = [s for s in samples if s[0] not in used]
                # Every answer of every step is tried once somewhere (each gateway branch); elsewhere a path
                # goes on with its first answer not yet given on it (a return loop is run once, then approved).
                untried = [s for s in fresh if (name, s[0]) not in tried]
                options = untried or (fresh or samples)[:1]
                tried.update((name, s[0]) for s in options)
                for choice_label, data in options[::-1]:
                    completions += 1
                    branch = spiff.loads(path.state, model)
                    target = next(t for t in spiff.ready_human_tasks(branch) if _step_name(t) == name)
                    step = f"{name}[{choice_label}]" if choice_label else name
                    steps = [*path.steps, step]
                    try:
                        target.data.update(spiff.step_data(branch, target, data))
                        target.run()
                        branch.do_engine_steps()
                        state = serialize_state(branch, model)
                    except Exception as exc:  # noqa: BLE001
                        element = _element(exc, name)
                        problems.setdefault(element, _failure(element, steps, exc))
                        continue
                    choices = {k: set(v) for k, v in path.choices.items()}
                    choices.setdefault(name, set()).add(choice_label)
                    stack.append(_Path(state, steps, choices))
    log.debug("simulation of %s: %d steps", model.process_id, completions)
    return list(problems.values())


def _failure(element: str, steps: list[str], exc: BaseException) -> ModelProblem:
    text = str(exc)
    return ModelProblem(element, f"the model fails when run along the path {' → '.join(steps)}: {text}",
                        f"按路径 {' → '.join(steps)} 运行时出错：{text}")
