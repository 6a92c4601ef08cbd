"""Edits of the shipped service_item model for tests of deploy checks, budgets and migration."""
from __future__ import annotations

import bpmn

SERVICE_ITEM = bpmn.read_model("service_item")
SURVEY_TIMER = '<bpmn:timeDate xsi:type="bpmn:tFormalExpression">due_at_iso</bpmn:timeDate>'


def with_timer(xml: str, kind: str, expression: str) -> str:
    """The first review's reminder (confirm_survey_overdue) with another timer expression."""
    at = xml.index(SURVEY_TIMER, xml.index('id="confirm_survey_overdue"'))  # not an earlier step's reminder
    text = expression.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    timer = f'<bpmn:{kind} xsi:type="bpmn:tFormalExpression">{text}</bpmn:{kind}>'
    return xml[:at] + timer + xml[at + len(SURVEY_TIMER):]


def with_script(xml: str, flow_id: str, script_id: str, script: str) -> str:
    """A script task spliced into the sequence flow `flow_id` (the flow now ends at the script)."""
    marker = f'<bpmn:sequenceFlow id="{flow_id}" sourceRef="'
    start = xml.index(marker)
    end = xml.index("/>", start)
    flow = xml[start:end]
    target = flow.split('targetRef="', 1)[1].split('"', 1)[0]
    new_flow = flow.replace(f'targetRef="{target}"', f'targetRef="{script_id}"')
    body = script.replace("&", "&amp;").replace("<", "&lt;")
    added = (f'<bpmn:scriptTask id="{script_id}" name="脚本"><bpmn:incoming>{flow_id}</bpmn:incoming>'
             f'<bpmn:outgoing>{flow_id}_next</bpmn:outgoing><bpmn:script>{body}</bpmn:script></bpmn:scriptTask>'
             f'<bpmn:sequenceFlow id="{flow_id}_next" sourceRef="{script_id}" targetRef="{target}"/>')
    xml = xml[:start] + new_flow + xml[end:]
    return xml.replace("</bpmn:process>", added + "</bpmn:process>", 1)


def renamed(xml: str, old: str, new: str) -> str:
    return xml.replace(f'id="{old}"', f'id="{new}"').replace(f'processRef="{old}"', f'processRef="{new}"')
