"""SpiffWorkflow 3.2.0 limits we work around: deep task trees from many return loops must keep advancing."""
from __future__ import annotations

import bpmn
from engine.runtime import spiff

START = {"mode": "new", "channels": ["pc"], "service_line": "1", "department": "DA", "attributes": {},
         "due_at_iso": "2099-01-01T00:00:00+00:00", "needs_difficulty_review": False}


def test_an_item_returned_250_times_still_advances():
    # Without the adapter's fixes the tree got deeper than TaskIterator's silent max_depth=1000 after
    # ~200 returns (no READY task visible: the item froze), and is_descendant_of hit the recursion limit.
    model = spiff.parse_model(bpmn.read_model("service_item"), "service_item")
    workflow = spiff.new_workflow(model, dict(START))

    def complete(data):
        ready = spiff.ready_human_tasks(workflow)
        assert ready, "no READY human task: the instance froze"
        task = ready[0]
        task.data.update(data)
        task.run()
        workflow.do_engine_steps()
        return task.task_spec.name

    complete({})
    complete({})
    for _ in range(250):
        assert complete({}) == "survey_sorting"
        assert complete({"decision": "return", "comment": "again"}) == "confirm_survey"
    restored = spiff.loads(spiff.dumps(workflow, model), model)
    names = [t.task_spec.name for t in spiff.ready_human_tasks(restored)]
    assert names == ["survey_sorting"]


def test_the_iterators_visit_tasks_in_the_librarys_order(monkeypatch):
    """The adapter's TaskIterator/BpmnTaskIterator steps (a deque, depth per entry: linear instead of quadratic in
    a returned item's deep tree) must visit exactly what the library's own steps visit, in the same order."""
    from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
    from SpiffWorkflow.util.task import TaskIterator, TaskState

    model = spiff.parse_model(bpmn.read_model("e_licence"), "e_licence")
    workflow = spiff.new_workflow(model, dict(START))
    looped = spiff.new_workflow(spiff.parse_model(bpmn.read_model("service_item"), "service_item"), dict(START))
    for _ in range(2):
        ready = spiff.ready_human_tasks(looped)
        ready[0].run()
        looped.do_engine_steps()
    for _ in range(20):  # a few returns: a deep chain with a pending sibling at every level
        for data in ({}, {"decision": "return", "comment": "again"}):
            task = spiff.ready_human_tasks(looped)[0]
            task.data.update(data)
            task.run()
            looped.do_engine_steps()

    def visits(wf, **kwargs):
        return [(t.id, t.state) for t in wf.get_tasks(**kwargs)] + \
            [t.id for t in TaskIterator(wf.task_tree, depth_first=False)] + \
            [t.id for t in BpmnTaskIterator(wf.task_tree, depth_first=False, skip_subprocesses=True)] + \
            [t.id for t in TaskIterator(wf.task_tree, max_depth=7)]

    queries = [{}, {"state": TaskState.READY}, {"state": TaskState.WAITING}, {"state": TaskState.PREDICTED_MASK}]
    ours = [visits(wf, **q) for wf in (workflow, looped) for q in queries]
    monkeypatch.setattr(TaskIterator, "_next", spiff.LIBRARY_NEXT[0])
    monkeypatch.setattr(BpmnTaskIterator, "_next", spiff.LIBRARY_NEXT[1])
    library = [visits(wf, **q) for wf in (workflow, looped) for q in queries]
    assert ours == library
    assert len(ours[4]) > 100  # the looped item's tree is big enough to show a difference in order
