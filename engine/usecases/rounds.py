"""The work's history as people read it: what each step recorded, and each review round with what changed."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from engine.evidence.artefacts import submission_of
from engine.trust.access import may_see_artefact
from storage.models import Artefact, GatePass, HumanTask, User


def artefact_versions(session: Session, item_id: int) -> dict[int, int]:
    """Each stored artefact's version number: its place among the item's files of its kind, in its evidence
    scope (a department's own files are counted apart from the whole item's and other departments')."""
    rows = session.execute(select(Artefact.id, Artefact.kind, Artefact.department_id).where(
        Artefact.item_id == item_id, Artefact.status == "stored").order_by(Artefact.id)).all()
    seen: dict[tuple[str, int | None], int] = defaultdict(int)
    versions: dict[int, int] = {}
    for artefact_id, kind, department_id in rows:
        seen[(kind, department_id)] += 1
        versions[artefact_id] = seen[(kind, department_id)]
    return versions


@dataclass
class Evidence:
    artefact: Artefact
    version: int
    changed_from: Artefact | None = None  # the version the previous round judged, when this one replaced it
    previous_version: int | None = None
    new: bool = False  # a kind the previous round did not have


@dataclass
class StepRecord:
    """One completed step: who did it, when, what they entered and which evidence versions its gate passed."""

    task: HumanTask
    by: User | None
    at: datetime | None
    data: dict[str, Any]
    evidence: list[Evidence] = field(default_factory=list)


def _evidence_by_task(session: Session, task_ids: list[int]) -> dict[int, list[Artefact]]:
    if not task_ids:
        return {}
    out: dict[int, list[Artefact]] = defaultdict(list)
    for task_id, artefact in session.execute(
            select(GatePass.task_id, Artefact).join(Artefact, Artefact.id == GatePass.artefact_id)
            .where(GatePass.task_id.in_(task_ids)).order_by(GatePass.id)).all():
        out[task_id].append(artefact)
    return out


def step_records(session: Session, viewer: User, item_id: int, task_ids: list[int] | None = None
                 ) -> list[StepRecord]:
    """Completed steps of an item (or just `task_ids`), oldest first, with only the evidence `viewer` may see
    (a department's reviewer never sees another department's files: engine/trust/access.py's evidence scope)."""
    query = select(HumanTask).where(HumanTask.item_id == item_id, HumanTask.status == "completed").options(
        lazyload(HumanTask.item), lazyload(HumanTask.assignee))
    if task_ids is not None:
        query = query.where(HumanTask.id.in_(task_ids))
    tasks = list(session.scalars(query.order_by(HumanTask.completed_at, HumanTask.id)))
    users = {u.id: u for u in session.scalars(select(User).where(
        User.id.in_({t.completed_by_id for t in tasks if t.completed_by_id})))} if tasks else {}
    versions = artefact_versions(session, item_id)
    evidence = _evidence_by_task(session, [t.id for t in tasks])
    return [StepRecord(task=t, by=users.get(t.completed_by_id or 0), at=t.completed_at, data=dict(t.data or {}),
                       evidence=[Evidence(a, versions.get(a.id, 1)) for a in evidence.get(t.id, [])
                                 if may_see_artefact(viewer, a)])
            for t in tasks]


@dataclass
class ReviewRound:
    """One round of a review: the submission it judged, and the review's answer (None for the open round)."""

    number: int
    submission: StepRecord | None
    review: StepRecord | None


def review_rounds(session: Session, viewer: User, review: HumanTask) -> list[ReviewRound]:
    """Every round of this review step up to `review` (its own round last), each with the submission it judged;
    files that differ from the previous round's are marked with the version they replaced. Only the evidence
    `viewer` may see is listed."""
    query = select(HumanTask).where(HumanTask.item_id == review.item_id, HumanTask.spec_name == review.spec_name,
                                    HumanTask.status.in_(("completed", "ready")), HumanTask.id <= review.id)
    if review.per_department:
        query = query.where(HumanTask.department_id == review.department_id)
    reviews = list(session.scalars(query.order_by(HumanTask.id).options(lazyload(HumanTask.item),
                                                                       lazyload(HumanTask.assignee))))
    submissions = {r.id: submission_of(session, r) for r in reviews}
    wanted = [t.id for t in reviews if t.status == "completed"] + [s.id for s in submissions.values() if s]
    records = {rec.task.id: rec for rec in step_records(session, viewer, review.item_id, wanted)}
    rounds: list[ReviewRound] = []
    previous: dict[str, Evidence] = {}
    for number, r in enumerate(reviews, start=1):
        submitted = submissions[r.id]
        record = records.get(submitted.id) if submitted else None
        if record is not None:
            current: dict[str, Evidence] = {}
            for ev in record.evidence:
                before = previous.get(ev.artefact.kind)
                if number > 1 and before is None:
                    ev.new = True
                elif before is not None and before.artefact.id != ev.artefact.id:
                    ev.changed_from, ev.previous_version = before.artefact, before.version
                current[ev.artefact.kind] = ev
            previous = current
        rounds.append(ReviewRound(number=number, submission=record, review=records.get(r.id)))
    return rounds


def previous_doer(session: Session, task: HumanTask) -> tuple[HumanTask, User] | None:
    """The last completion of the same step on the same item (and department), with the person who did it."""
    query = select(HumanTask).where(HumanTask.item_id == task.item_id, HumanTask.spec_name == task.spec_name,
                                    HumanTask.status == "completed")
    if task.per_department:
        query = query.where(HumanTask.department_id == task.department_id)
    if task.id is not None:
        query = query.where(HumanTask.id < task.id)
    done = session.scalars(query.order_by(HumanTask.id.desc()).limit(1).options(
        lazyload(HumanTask.item), lazyload(HumanTask.assignee))).first()
    if done is None or done.completed_by_id is None:
        return None
    user = session.get(User, done.completed_by_id)
    return (done, user) if user is not None else None


def latest_return_since(session: Session, item_id: int, since_task_id: int) -> str | None:
    """The comment of the latest "return" decision on the item after a given task: why a step is open again."""
    rows = session.scalars(select(HumanTask.data).where(
        HumanTask.item_id == item_id, HumanTask.status == "completed", HumanTask.id > since_task_id)
        .order_by(HumanTask.completed_at.desc(), HumanTask.id.desc()))
    for data in rows:
        if data and data.get("decision") == "return" and data.get("comment"):
            return str(data["comment"])
    return None
