"""The work-kind registry reads the BPMN models: process ids, forms, stage names and step help."""
from __future__ import annotations

import re

import bpmn
import forms
from engine.runtime.modelcheck import check_model
from engine.runtime.workkinds import describe, stage_labels, step_help, work_kind_ids, work_kinds


def test_every_shipped_work_process_is_a_work_kind_and_settlement_is_not():
    assert "settlement" not in work_kind_ids()
    assert set(work_kind_ids()) == set(bpmn.shipped_process_ids()) - {"settlement"}


def test_each_kind_names_its_forms_and_every_stage_its_tasks_enter():
    labels = stage_labels()
    for kind in work_kinds().values():
        assert kind.forms and set(kind.forms) <= set(forms.FORMS), kind.process_id
        used = set(re.findall(r'name="stage" value="([a-z_]+)"', bpmn.read_model(kind.process_id)))
        assert used <= set(kind.stages) <= set(labels), kind.process_id
    assert labels["done"] == "已完成"
    # Several kinds share the review form; each model carries its own text for it.
    assert work_kinds()["service_item"].step_help["review"].startswith("审阅提交的材料")
    assert step_help()["review"] in {k.step_help.get("review") for k in work_kinds().values()}


def test_a_new_model_is_a_new_work_kind_and_an_unnamed_stage_is_refused():
    xml = bpmn.read_model("scenario_guide").replace('id="scenario_guide"', 'id="new_kind"') \
        .replace('processRef="scenario_guide"', 'processRef="new_kind"')
    (kind,) = describe(xml)
    assert kind.process_id == "new_kind" and "guide" in kind.stages
    assert not check_model(xml, "new_kind", "new_kind.bpmn")
    unnamed = xml.replace('<spiffworkflow:property name="stage.guide" value="场景导办"/>', "")
    problems = check_model(unnamed, "new_kind", "new_kind.bpmn")
    assert problems and "stage 'guide' has no label" in str(problems[0])
