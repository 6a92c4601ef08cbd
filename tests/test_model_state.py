"""The serialized state alone decides what an instance does next: resuming against a freshly parsed model (a new
worker, another host) behaves exactly as resuming against the one this process parsed and ran before."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import bpmn
from engine import caching
from engine.runtime import spiff
from engine.runtime.workkinds import work_kind_ids
from engine.usecases.settlement import PROCESS_ID

START = {"mode": "new", "channels": ["pc"], "service_line": "5", "department": "DA", "attributes": {},
         "needs_walkthrough": True, "needs_difficulty_review": False,
         "due_at_iso": "9999-12-31T00:00:00+00:00", "departments": ["DA", "DB"]}
APPROVE = {"decision": "approve", "comment": "ok"}
RETURN = {"decision": "return", "comment": "again"}


@pytest.fixture
def cold() -> Iterator[None]:
    before = caching.enabled()
    caching.set_enabled(False)
    try:
        yield
    finally:
        caching.set_enabled(before)


def _fresh(process_id: str) -> spiff.ParsedModel:
    return spiff.parse_model(bpmn.read_model(process_id), process_id, f"{process_id}.bpmn")


def _ready(workflow: Any) -> list[tuple[str, str | None]]:
    return sorted((t.task_spec.name, t.data.get("dept")) for t in spiff.ready_human_tasks(workflow))


def _step(state: str, process_id: str, name: str, data: dict[str, Any], dept: str | None = None) -> str:
    """One request: load the state against a model parsed for this request alone, complete one task, save."""
    model = _fresh(process_id)
    workflow = spiff.loads(state, model)
    task = next(t for t in spiff.ready_human_tasks(workflow)
                if t.task_spec.name == name and (dept is None or t.data.get("dept") == dept))
    task.data.update(spiff.step_data(workflow, task, data))
    task.run()
    workflow.do_engine_steps()
    return spiff.dumps(workflow, model)


def test_cold_mode_parses_every_model_afresh(cold):
    assert _fresh("one_thing").spec is not _fresh("one_thing").spec
    assert spiff.cached_model(spiff.content_hash(bpmn.read_model("one_thing")), "one_thing") is None


def test_per_department_step_finishes_when_resumed_against_a_fresh_model(cold):
    """Two departments confirm their linked-item analysis, each request on a model no earlier request touched:
    the multi-instance subprocess must finish and the plan step open (it used to freeze with nothing open)."""
    model = _fresh("one_thing")
    workflow = spiff.new_workflow(model, dict(START))
    state = spiff.dumps(workflow, model)
    state = _step(state, "one_thing", "intake", {})
    state = _step(state, "one_thing", "confirm_difficulty", {"difficulty": "1.20"})
    state = _step(state, "one_thing", "survey_current", {})
    for dept in ("DA", "DB"):
        state = _step(state, "one_thing", "analyse_linked_item", {}, dept)
    state = _step(state, "one_thing", "confirm_linked_item", RETURN, "DA")
    state = _step(state, "one_thing", "analyse_linked_item", {}, "DA")
    state = _step(state, "one_thing", "confirm_linked_item", APPROVE, "DB")
    assert _ready(spiff.loads(state, _fresh("one_thing"))) == [("confirm_linked_item", "DA")]
    state = _step(state, "one_thing", "confirm_linked_item", APPROVE, "DA")
    assert [name for name, _ in _ready(spiff.loads(state, _fresh("one_thing")))] == ["business_technical_plan"]


@pytest.mark.parametrize("process_id", [*work_kind_ids(), PROCESS_ID])
def test_running_an_instance_leaves_its_parsed_model_unchanged(process_id, cold):
    """Nothing a run does may stay behind on the shared spec objects (a later request on the same process would
    behave differently from one on a fresh process): every task spec's completion subscribers are the same
    before and after driving an instance as far as approvals take it."""
    model = _fresh(process_id)
    specs = [model.spec, *model.subprocess_specs.values()]

    def subscribers() -> dict[tuple[str, str], int]:
        return {(spec.name, name): task_spec.completed_event.n_subscribers()
                for spec in specs for name, task_spec in spec.task_specs.items()}

    before = subscribers()
    workflow = spiff.new_workflow(model, dict(START, parts=["showing"]))
    for _ in range(60):
        ready = spiff.ready_human_tasks(workflow)
        if not ready:
            break
        decision = "accept" if ready[0].task_spec.name == "audit_review" else "approve"
        # Through the adapter task completion uses: a co-sign step (19) records its decision under its own name.
        ready[0].data.update(spiff.step_data(workflow, ready[0], {"decision": decision, "confirm": True,
                                                                  "tests_passed": True}))
        ready[0].run()
        workflow.do_engine_steps()
    assert workflow.is_completed()
    assert subscribers() == before
