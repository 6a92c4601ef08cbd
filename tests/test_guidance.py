"""Step guidance comes from the model each task runs (documentation + help_en) and names what its gate needs."""
from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from engine.contract.catalog import ARTEFACT_KINDS
from engine.runtime.modelcheck import BPMN_NS, NS, properties_of
from engine.runtime.workkinds import work_kind_ids
from tests.test_kinds_api import APPROVE, do, intake

BPMN_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "bpmn"


@pytest.mark.parametrize("pid", work_kind_ids())
def test_every_step_of_every_work_kind_says_what_it_asks_in_both_languages(pid: str) -> None:
    root = etree.parse(str(BPMN_DIR / f"{pid}.bpmn")).getroot()
    for task in root.iter(f"{{{BPMN_NS}}}userTask"):
        doc = task.find("bpmn:documentation", NS)
        assert doc is not None and (doc.text or "").strip(), task.get("id")
        assert (properties_of(task).get("help_en") or "").strip(), task.get("id")
        # The files a step needs are listed from its gate on the page; the prose never asks for a kind by name,
        # so a reused form or a changed catalogue cannot make it ask for the wrong files.
        asks = doc.text.split("上传", 1)[1] if "上传" in doc.text else ""
        named = [title for title in ARTEFACT_KINDS.values() if title in asks]
        assert not named, (task.get("id"), named)


def test_e_licence_issuing_test_names_the_kinds_its_gate_requires(world: Any, client: Any) -> None:
    from tests.test_web import Browser

    item_id = world.new_item("SH-GUIDE-1", line="12", channels=[])["id"]
    intake(world, item_id, {"parts": [], "summary": "营业执照"})
    do(world, "impl", item_id, "collect_info", {})
    do(world, "rev_a", item_id, "confirm_info", APPROVE)
    do(world, "impl", item_id, "customise_template", {})
    do(world, "impl", item_id, "configure_parameters", {})
    do(world, "rev_a", item_id, "template_check", APPROVE)
    task = next(t for t in world.open_tasks(item_id) if t["name"] == "issuing_test")
    required = [r["title"] for r in world.get("impl", f"/api/v1/tasks/{task['id']}").get_json()["required_artefacts"]]
    page = Browser(world.app, "impl").get(f"/tasks/{task['id']}").get_data(as_text=True)
    help_box = page[page.index('id="step-help"'):page.index('id="step-help"') + 2000]
    assert "制证联调与测试" in help_box or "制证" in help_box
    for title in required:
        assert title in help_box, (title, help_box[:400])
    assert "功能和性能测试报告" not in help_box
