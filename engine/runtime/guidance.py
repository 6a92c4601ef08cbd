"""Step guidance from the model a task runs: each user task's `<documentation>` (Chinese) and `help_en` property."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.runtime.modelcheck import BPMN_NS, NS, properties_of, xml_tree
from storage.models import HumanTask, ProcessDefinition, ProcessInstance


@dataclass(frozen=True)
class Guidance:
    zh: str
    en: str


_CACHE: dict[str, dict[str, Guidance]] = {}  # definition sha256 → task id → guidance (definitions never change)
_LOCK = threading.Lock()


def guidance_of(xml: str) -> dict[str, Guidance]:
    root = xml_tree(xml, "model.bpmn")
    out: dict[str, Guidance] = {}
    for task in root.iter(f"{{{BPMN_NS}}}userTask"):
        doc = task.find("bpmn:documentation", NS)
        zh = (doc.text or "").strip() if doc is not None else ""
        en = (properties_of(task).get("help_en") or "").strip()
        if zh or en:
            out[task.get("id")] = Guidance(zh, en or zh)
    return out


def step_guidance(session: Session, task: HumanTask) -> Guidance | None:
    """What this step asks, as the model the task's own instance runs says it (a changed model carries its own)."""
    row = session.execute(select(ProcessDefinition.sha256, ProcessDefinition.id)
                          .join(ProcessInstance, ProcessInstance.definition_id == ProcessDefinition.id)
                          .where(ProcessInstance.id == task.instance_id)).first()
    if row is None:
        return None
    sha, definition_id = row
    with _LOCK:
        known = _CACHE.get(sha)
    if known is None:
        xml = session.execute(select(ProcessDefinition.bpmn_xml).where(ProcessDefinition.id == definition_id)).scalar()
        known = guidance_of(xml or "")
        with _LOCK:
            _CACHE[sha] = known
    return known.get(task.spec_name)
