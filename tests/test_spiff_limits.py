"""SpiffWorkflow 3.2.0 limits we work around: deep task trees from many return loops must keep advancing."""
from __future__ import annotations

import bpmn
from engine import spiff

START = {"mode": "new", "channels": ["pc"], "service_line": "1", "department": "DA", "attributes": {},
         "due_at_iso": "2099-01-01T00:00:00+00:00"}


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
