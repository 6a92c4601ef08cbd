"""SVG rendering of the process diagrams: one shape per task, states highlighted, unsafe input refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.runtime.diagram import DiagramError, render_svg

BPMN_DIR = Path(__file__).resolve().parents[1] / "bpmn"
SVG = "{http://www.w3.org/2000/svg}"
BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"

CASES = {
    "service_item": ({"intake": "done", "confirm_difficulty": "done", "survey_sorting": "returned"},
                     "confirm_survey"),
    "one_thing": ({"intake": "done", "survey_current": "done"}, "analyse_linked_item"),
    "e_licence": ({"intake": "done", "collect_info": "done"}, "template_check"),
    "scenario_guide": ({"guide_list": "done"}, "guide_design"),
}

TINY = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
    xmlns:di="http://www.omg.org/spec/DD/20100524/DI" id="d" targetNamespace="x">
  <bpmn:process id="tiny" name="小流程">
    <bpmn:startEvent id="s"/>
    <bpmn:userTask id="t" name="NAME"/>
    <bpmn:sequenceFlow id="f" name="FLOW" sourceRef="s" targetRef="t"/>
  </bpmn:process>
  <bpmndi:BPMNDiagram id="dg"><bpmndi:BPMNPlane id="p" bpmnElement="tiny">
    <bpmndi:BPMNShape id="s_di" bpmnElement="s">
      <dc:Bounds x="10" y="32" width="36" height="36"/></bpmndi:BPMNShape>
    <bpmndi:BPMNShape id="t_di" bpmnElement="t">
      <dc:Bounds x="100" y="10" width="120" height="80"/></bpmndi:BPMNShape>
    <bpmndi:BPMNEdge id="f_di" bpmnElement="f">
      <di:waypoint x="46" y="50"/><di:waypoint x="100" y="50"/></bpmndi:BPMNEdge>
  </bpmndi:BPMNPlane></bpmndi:BPMNDiagram>
</bpmn:definitions>
"""


def user_task_ids(xml: bytes) -> list[str]:
    return [t.get("id") for t in ET.fromstring(xml).iter(f"{BPMN}userTask")]


def groups(svg_root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-element-id"): g for g in svg_root.iter(f"{SVG}g") if g.get("data-element-id")}


@pytest.mark.parametrize("pid", list(CASES))
def test_renders_a_titled_shape_per_task_and_highlights_the_current_one(pid):
    xml = (BPMN_DIR / f"{pid}.bpmn").read_bytes()
    states, current = CASES[pid]
    svg = render_svg(xml, pid, {**states, current: "current"})
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    x, y, w, h = (float(v) for v in root.get("viewBox").split())
    assert w > 500 and h > 200
    shapes = groups(root)
    for task_id in user_task_ids(xml):
        g = shapes[task_id]
        assert "ig-userTask" in g.get("class")
        title = g.find(f"{SVG}title")
        assert title is not None and title.text
        rect = g.find(f"{SVG}rect")
        assert rect is not None and float(rect.get("width")) > 0
        if task_id == current:
            assert "ig-current" in g.get("class") and g.get("data-state") == "current"
            assert rect.get("stroke") == "#e8590c" and float(rect.get("stroke-width")) >= 3
            assert "当前环节" in title.text
        else:
            assert "ig-current" not in g.get("class")
    for task_id, state in states.items():
        assert shapes[task_id].get("data-state") == state
    done = shapes[next(k for k, v in states.items() if v == "done")]
    assert done.find(f"{SVG}rect").get("fill") == "#ebfbee"
    assert done.find(f"{SVG}circle") is not None  # the check badge
    texts = "".join(root.itertext())
    assert "实施人员" in texts and "需求单位审核人" in texts
    assert not list(root.iter(f"{SVG}script")) and "javascript:" not in svg
    assert not any(k.startswith("on") for el in root.iter() for k in el.attrib)
    # every sequence flow is drawn with an arrow
    flows = [f.get("id") for f in ET.fromstring(xml).iter(f"{BPMN}sequenceFlow")]
    for fid in flows:
        line = shapes[fid].find(f"{SVG}polyline")
        assert line is not None and line.get("marker-end", "").startswith("url(#")


def test_subprocess_contains_its_children_and_shows_multi_instance():
    xml = (BPMN_DIR / "one_thing.bpmn").read_bytes()
    root = ET.fromstring(render_svg(xml, "one_thing", {}))
    shapes = groups(root)
    outer = shapes["linked_item_analysis"].find(f"{SVG}rect")
    inner = shapes["analyse_linked_item"].find(f"{SVG}rect")
    ox, oy, ow, oh = (float(outer.get(k)) for k in ("x", "y", "width", "height"))
    ix, iy, iw, ih = (float(inner.get(k)) for k in ("x", "y", "width", "height"))
    assert ox < ix and ix + iw < ox + ow and oy < iy and iy + ih < oy + oh
    assert len(shapes["linked_item_analysis"].findall(f"{SVG}path")) == 3  # parallel multi-instance bars


def test_gateways_and_events_have_their_markers():
    xml = (BPMN_DIR / "e_licence.bpmn").read_bytes()
    shapes = groups(ET.fromstring(render_svg(xml, "e_licence", {})))
    assert shapes["gw_parts"].find(f"{SVG}polygon") is not None
    assert shapes["gw_parts"].find(f"{SVG}circle") is not None  # inclusive: a circle
    assert shapes["gw_cosign_split"].find(f"{SVG}path") is not None  # parallel: a plus
    assert float(shapes["done"].find(f"{SVG}circle").get("stroke-width")) >= 3  # end event: thick


def test_text_is_escaped():
    nasty = "a &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;"
    xml = TINY.replace("NAME", nasty).replace("FLOW", "&lt;/text&gt;")
    svg = render_svg(xml, "tiny", {"t": "current", "<x>": "done"})
    root = ET.fromstring(svg)
    assert not list(root.iter(f"{SVG}script"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    title = groups(root)["t"].find(f"{SVG}title").text
    assert title.startswith('a <script>alert(1)</script> & "q"')


def test_accepts_bytes_and_str_and_a_plain_process_plane():
    svg_str = render_svg(TINY, "tiny", {})
    svg_bytes = render_svg(TINY.encode("utf-8"), "tiny", {})
    assert svg_str == svg_bytes
    assert "小流程" in svg_str


@pytest.mark.parametrize("prolog", [
    '<!DOCTYPE bpmn:definitions [<!ENTITY x "boom">]>',
    '<!doctype bpmn:definitions SYSTEM "file:///etc/passwd">',
    '<!ENTITY y "z">',
])
def test_refuses_doctype_and_entities(prolog):
    xml = TINY.replace('<bpmn:definitions', prolog + '\n<bpmn:definitions', 1)
    with pytest.raises(DiagramError):
        render_svg(xml, "tiny", {})
    with pytest.raises(DiagramError):
        render_svg(xml.encode("utf-8"), "tiny", {})


def test_refuses_unknown_process_malformed_and_non_utf8_input():
    with pytest.raises(DiagramError):
        render_svg(TINY, "missing", {})
    with pytest.raises(DiagramError):
        render_svg("<bpmn:definitions", "tiny", {})
    with pytest.raises(DiagramError):
        render_svg(TINY.encode("utf-16"), "tiny", {})
    with pytest.raises(DiagramError):
        render_svg(TINY.replace('x="100" y="10"', 'x="nan" y="10"'), "tiny", {})
    assert issubclass(DiagramError, ValueError)
