"""A work item as one viewer may see it: its tasks, the artefacts the viewer's evidence scope shows, the open
gates' checklists and the history of those — what the REST item, the web item page and the intake answer show."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.trust.access import may_see_artefact
from engine.usecases.tasks import GateStatus, task_requirements
from storage.models import Artefact, AuditEvent, HumanTask, User, WorkItem


@dataclass
class OpenGate:
    """A ready task's gate with what it needs, each kind with its latest artefact in the task's scope (or None)."""

    gate: str
    task: HumanTask
    required: list[GateStatus]


@dataclass
class ItemDetail:
    item: WorkItem
    tasks: list[HumanTask]
    artefacts: list[Artefact]
    gates: list[OpenGate]
    history: list[AuditEvent]


def item_detail(session: Session, item: WorkItem, viewer: User, *, tasks: list[HumanTask] | None = None,
                artefacts: list[Artefact] | None = None, events: list[AuditEvent] | None = None) -> ItemDetail:
    """The item with its tasks, the artefacts `viewer` may see, open gates and history (all by id); a caller that
    holds the complete lists (a just-created item) passes them instead of having them queried. The caller has
    authorised reading the item (engine.trust.access.load_item_for)."""
    if tasks is None:
        tasks = list(session.scalars(select(HumanTask).where(HumanTask.item_id == item.id).order_by(HumanTask.id)))
    tasks = sorted(tasks, key=lambda t: t.id)
    if artefacts is None:
        artefacts = list(session.scalars(select(Artefact).where(Artefact.item_id == item.id)
                                         .order_by(Artefact.id)))
    visible = [a for a in artefacts if may_see_artefact(viewer, a)]
    # Each step's checklist from its own evidence scope (all of the item's artefacts, so another department's
    # file counts for its own step); the JSON names only kinds and presence.
    gates = [OpenGate(t.gate, t, task_requirements(session, t, artefacts))
             for t in tasks if t.status == "ready" and t.gate]
    if events is not None:
        history = sorted(events, key=lambda e: e.id)
    else:
        task_ids = [str(t.id) for t in tasks]
        history = list(session.scalars(select(AuditEvent).where(
            ((AuditEvent.target_type == "item") & (AuditEvent.target_id == str(item.id)))
            | ((AuditEvent.target_type == "task") & (AuditEvent.target_id.in_(task_ids)))
            | ((AuditEvent.target_type == "artefact") & (AuditEvent.target_id.in_([str(a.id) for a in visible])))
        ).order_by(AuditEvent.id)))
    return ItemDetail(item, tasks, visible, gates, history)
