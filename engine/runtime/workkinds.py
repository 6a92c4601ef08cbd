"""The work kinds: one per shipped BPMN process marked `work_kind`, described by the model itself.

A new work kind is a BPMN file (process property `work_kind`, one `stage.<key>` property per stage its tasks
name, each user task's `<documentation>` saying what the step asks), its forms and a catalogue entry; the
catalogue, the web pages and the tests read the kinds from here.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

import bpmn
from engine.runtime.modelcheck import BPMN_NS, NS, properties_of, xml_tree

WORK_KIND = "work_kind"
STAGE_PREFIX = "stage."
# Stages the engine itself sets on an item, whatever its process.
ENGINE_STAGES = {"done": "已完成"}


@dataclass(frozen=True)
class WorkKind:
    process_id: str
    name: str
    forms: tuple[str, ...]
    stages: dict[str, str] = field(default_factory=dict)       # stage key → label, in the model's order
    step_help: dict[str, str] = field(default_factory=dict)    # form key → what the step asks of people
    # The contract's own work (process property `contract_level`: a monthly report), never a service line's.
    contract_level: bool = False


def describe(xml: str, filename: str = "model.bpmn") -> list[WorkKind]:
    """The work kinds one BPMN document defines (its executable processes marked `work_kind`)."""
    root = xml_tree(xml, filename)
    kinds = []
    for process in root.iterfind("bpmn:process", NS):
        if process.get("isExecutable") == "false":
            continue
        props = properties_of(process)
        if props.get(WORK_KIND) != "true":
            continue
        stages = {k[len(STAGE_PREFIX):]: v for k, v in props.items() if k.startswith(STAGE_PREFIX)}
        forms: list[str] = []
        help_: dict[str, str] = {}
        for task in process.iter(f"{{{BPMN_NS}}}userTask"):
            form = properties_of(task).get("form")
            if not form:
                continue
            if form not in forms:
                forms.append(form)
            doc = task.find("bpmn:documentation", NS)
            if doc is not None and (doc.text or "").strip():
                help_.setdefault(form, doc.text.strip())
        kinds.append(WorkKind(process.get("id"), process.get("name") or process.get("id"), tuple(forms),
                              stages, help_, props.get("contract_level") == "true"))
    return kinds


@functools.cache
def _shipped() -> dict[str, WorkKind]:
    # The shipped files never change while the process runs, so reading them once is safe.
    found: dict[str, WorkKind] = {}
    for process_id in bpmn.shipped_process_ids():
        for kind in describe(bpmn.read_model(process_id), f"{process_id}.bpmn"):
            found[kind.process_id] = kind
    return found


def work_kinds() -> dict[str, WorkKind]:
    """process id → work kind, for every shipped model that is one."""
    return dict(_shipped())


def work_kind_ids() -> tuple[str, ...]:
    return tuple(sorted(_shipped()))


def line_kind_ids() -> tuple[str, ...]:
    """The work kinds a service line may run (not the contract's own, such as the monthly report)."""
    return tuple(sorted(k for k, kind in _shipped().items() if not kind.contract_level))


def _merge(sequences: Iterable[list[str]]) -> list[str]:
    """One order for keys several sequences share: a new key goes before the next key already placed."""
    merged: list[str] = []
    for sequence in sequences:
        for i, key in enumerate(sequence):
            if key in merged:
                continue
            later = next((k for k in sequence[i + 1:] if k in merged), None)
            merged.insert(merged.index(later) if later is not None else len(merged), key)
    return merged


@functools.cache
def stage_labels() -> dict[str, str]:
    """Every stage key → its label, across work kinds (the longest process's order first), then the engine's."""
    kinds = sorted(_shipped().values(), key=lambda k: (-len(k.stages), k.process_id))
    labels: dict[str, str] = {}
    for kind in kinds:
        for key, label in kind.stages.items():
            labels.setdefault(key, label)
    ordered = {key: labels[key] for key in _merge(list(k.stages) for k in kinds)}
    return {**ordered, **ENGINE_STAGES}


@functools.cache
def step_help() -> dict[str, str]:
    """form key → what the step asks, from the models' task documentation."""
    out: dict[str, str] = {}
    for kind in sorted(_shipped().values(), key=lambda k: k.process_id):
        for form, text in kind.step_help.items():
            out.setdefault(form, text)
    return out
